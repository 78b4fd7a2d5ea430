# syntax=docker/dockerfile:1
#
# One image for every carstream stage (Spark driver and executors, started by spark-operator)
# and for the operator (`carstream-operator`).
#
# Why this shape: the official apache/spark images run Python 3.10 (Ubuntu jammy), and carstream
# needs Python >= 3.11. So the runtime is the official Python 3.11 image plus Debian's Java 17,
# Spark itself comes from the pinned pyspark wheel (`pip install .`, the same Spark 4.2.0 jars
# the tests run), and only Spark's Kubernetes entrypoint (driver/executor launcher) and decom.sh
# are taken from the official Spark image of the same version.
#
#   docker build -t carstream:0.1.0 .          (or scripts/kind-up, which also loads it into kind)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG MAVEN_IMAGE=maven:3.9-eclipse-temurin-17
ARG SPARK_IMAGE=apache/spark:4.2.0-python3

# Java artifacts that the pyspark wheel does not ship: Spark's Kafka connector and hadoop-aws with
# the AWS SDK bundle, resolved from Maven Central by build/pom.xml (profiles spark-kafka, spark-s3).
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /build
COPY build/pom.xml pom.xml
RUN mvn -q -B -f pom.xml -P spark-kafka -Djars.dir=/jars dependency:copy-dependencies \
    && mvn -q -B -f pom.xml -P spark-s3 -Djars.dir=/jars dependency:copy-dependencies

# carstream and its pinned dependencies (pyspark 4.2.0 included) in a virtualenv.
FROM ${PYTHON_IMAGE} AS python
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jobs jobs
COPY operator operator
RUN /opt/venv/bin/pip install .

FROM ${SPARK_IMAGE} AS spark

FROM ${PYTHON_IMAGE}
ARG SPARK_UID=185
# tini and libnss-wrapper are used by Spark's entrypoint.sh, procps by decom.sh.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps libnss-wrapper \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${SPARK_UID}" spark \
    && useradd --system --uid "${SPARK_UID}" --gid spark --home-dir /opt/spark/work-dir --no-create-home spark \
    && mkdir -p /opt/spark/work-dir /opt/carstream \
    && chown spark:spark /opt/spark/work-dir

# SPARK_HOME is the pyspark package: its jars/ and bin/ are a complete Spark 4.2.0.
ENV SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark
COPY --from=python /opt/venv /opt/venv
COPY --from=jars /jars/ ${SPARK_HOME}/jars/
COPY --from=spark /opt/entrypoint.sh /opt/decom.sh /opt/
COPY jobs/carstream/__main__.py /opt/carstream/main.py
RUN /opt/venv/bin/python /opt/carstream/main.py --help > /dev/null \
    && /opt/venv/bin/python -c "import carstream.cli, carstream_operator, pyspark" \
    && test -x "${SPARK_HOME}/bin/spark-submit" \
    && test -n "$(find "${SPARK_HOME}/jars" -name 'spark-sql-kafka-0-10_2.13-*.jar')" \
    && test -n "$(find "${SPARK_HOME}/jars" -name 'hadoop-aws-*.jar')"

ENV PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/spark/work-dir
USER 185:185
ENTRYPOINT ["/opt/entrypoint.sh"]
CMD ["carstream", "--help"]
