# One image for every carstream stage (Spark driver and executors, started by spark-operator)
# and for the operator (`carstream-operator`), the same for users and for CI:
#
#   DOCKER_BUILDKIT=1 docker build -t carstream:0.1.0 .
#
# debian:bookworm-slim is the only base: Debian's Java 17, Python 3.11, tini and procps; Spark
# is the pinned pyspark wheel (SPARK_HOME is its package folder, the very Spark 4.2.0 the tests
# run), installed with carstream and its pinned dependencies into a virtualenv; the Java
# artifacts the wheel lacks (and the Kafka broker of the chart's standalone mode, in
# /opt/carstream/jars/kafka-broker) come from Maven Central through build/pom.xml; the Kubernetes
# entry point (build/image/entrypoint.sh) is our own.
#
# Build argument:
#   JAR_GROUPS  profiles of build/pom.xml resolved into Spark's jars. Default
#               "spark-kafka spark-s3 openlineage": the Kafka connector, hadoop-aws with the
#               AWS SDK v2 bundle (686 MB) for s3a:// on EKS, and OpenLineage's Spark listener
#               (43 MB, for a Pipeline's spark.openlineage.* sparkConf). "spark-kafka" alone
#               leaves both out.
# Secret:
#   extra-ca    PEM certificates to trust besides Debian's, for networks whose HTTPS goes
#               through a TLS-intercepting proxy:
#                 --secret id=extra-ca,src=/usr/local/share/ca-certificates/corporate.pem
#               Only the download steps (pip, Maven) see it (build/image/with-extra-ca); no
#               layer of the image holds it.
# RUN --mount needs BuildKit: DOCKER_BUILDKIT=1 on Docker 20.10, the default from Docker 23.
# There is no `# syntax=` line on purpose: the Dockerfile frontend built into Docker 20.10
# knows RUN --mount already, and a syntax line would pull a frontend image from a registry.
#
# EKS nodes are amd64 (or arm64 on Graviton). From an ARM laptop (Apple silicon) build for the
# nodes' platform, e.g.
#   docker buildx build --platform linux/amd64 -t <registry>/carstream:0.1.0 --push .
# Nothing here is architecture-specific: java is found through PATH, not a JAVA_HOME path.

# --- runtime: what the final image and the build stages share -----------------------------
FROM debian:bookworm-slim AS runtime
# apt over http (Debian's default sources) needs no CA; the man folder keeps the JRE's
# postinst from failing on slim images that lack it.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless python3 tini procps \
    && rm -rf /var/lib/apt/lists/*

# --- jars: Spark's Kafka connector (and S3) from Maven Central ----------------------------
FROM runtime AS jars
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends maven \
    && rm -rf /var/lib/apt/lists/*
COPY build/image/with-extra-ca /usr/local/bin/with-extra-ca
COPY build/pom.xml /build/pom.xml
ARG JAR_GROUPS="spark-kafka spark-s3 openlineage"
RUN --mount=type=secret,id=extra-ca --mount=type=cache,target=/root/.m2 \
    mkdir -p /jars \
    && for group in $JAR_GROUPS; do \
        with-extra-ca mvn -q -B -f /build/pom.xml -P "$group" -Djars.dir=/jars \
            dependency:copy-dependencies || exit 1; \
    done
# The Kafka broker of the chart's standalone mode (`carstream broker`), in a folder of its own:
# its jars must not meet Spark's on one classpath.
RUN --mount=type=secret,id=extra-ca --mount=type=cache,target=/root/.m2 \
    with-extra-ca mvn -q -B -f /build/pom.xml -P kafka-broker -Djars.dir=/broker-jars \
        dependency:copy-dependencies

# --- python: carstream and its pinned dependencies in /opt/venv ---------------------------
FROM runtime AS python
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY build/image/with-extra-ca /usr/local/bin/with-extra-ca
WORKDIR /src
# The dependencies first, from pyproject.toml alone, so a change of carstream's code reuses
# this layer; then carstream itself without dependencies.
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=extra-ca --mount=type=cache,target=/root/.cache/pip \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
        >/tmp/requirements.txt \
    && with-extra-ca /opt/venv/bin/pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY jobs jobs
COPY operator operator
RUN --mount=type=secret,id=extra-ca --mount=type=cache,target=/root/.cache/pip \
    with-extra-ca /opt/venv/bin/pip install --no-deps /src

# --- the image ----------------------------------------------------------------------------
FROM runtime
ARG SPARK_UID=185
RUN groupadd --system --gid "${SPARK_UID}" spark \
    && useradd --system --uid "${SPARK_UID}" --gid spark --home-dir /opt/spark/work-dir \
        --no-create-home spark \
    && mkdir -p /opt/spark/work-dir /opt/carstream \
    && chown spark:spark /opt/spark/work-dir

# SPARK_HOME is the pyspark package: its jars/ and bin/ are a complete Spark 4.2.0.
ENV SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark
COPY --from=python /opt/venv /opt/venv
COPY --from=jars /jars/ ${SPARK_HOME}/jars/
COPY --from=jars /broker-jars/ /opt/carstream/jars/kafka-broker/
COPY build/image/entrypoint.sh /opt/entrypoint.sh
COPY jobs/carstream/__main__.py /opt/carstream/main.py
ARG JAR_GROUPS="spark-kafka spark-s3 openlineage"
RUN /opt/venv/bin/python /opt/carstream/main.py --help >/dev/null \
    && /opt/venv/bin/python -c "import carstream.cli, carstream_operator, pyspark" \
    && test -x "${SPARK_HOME}/bin/spark-submit" \
    && test -n "$(find /opt/carstream/jars/kafka-broker -name 'kafka_2.13-*.jar')" \
    && java -XX:-UsePerfData -version \
    && for group in $JAR_GROUPS; do \
        case "$group" in \
            spark-kafka) jar='spark-sql-kafka-0-10_2.13-*.jar' ;; \
            spark-s3) jar='hadoop-aws-*.jar' ;; \
            openlineage) jar='openlineage-spark_2.13-*.jar' ;; \
            *) jar='*.jar' ;; \
        esac; \
        test -n "$(find "${SPARK_HOME}/jars" -name "$jar")" || exit 1; \
    done

ENV PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/spark/work-dir
USER 185:185
ENTRYPOINT ["/opt/entrypoint.sh"]
CMD ["carstream", "--help"]
