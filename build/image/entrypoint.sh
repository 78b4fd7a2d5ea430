#!/bin/bash
# Entry point of the carstream image, for Spark's pods on Kubernetes and everything else:
#
#   driver ARGS...  a Spark driver pod (spark-submit --deploy-mode cluster creates it with these
#                   arguments): spark-submit in client mode inside the pod, bound to the pod IP
#   executor        a Spark executor pod: the executor JVM, configured by the SPARK_* variables
#                   that the driver sets on the pod
#   anything else   runs as it is: carstream ..., carstream-operator, bash, ...
#
# Spark's own images carry such a script; the pyspark wheel that provides Spark here does not,
# so this one does what Spark's Kubernetes backend expects of it, for this image's layout:
# SPARK_HOME is the pyspark package, java and python are found through PATH. Every command
# runs under tini, which forwards signals and reaps orphans.
set -euo pipefail

# Spark's jars, then what SPARK_EXTRA_CLASSPATH adds; a conf dir goes in front.
spark_classpath() {
  local classpath="$SPARK_HOME/jars/*"
  if [[ -n "${SPARK_EXTRA_CLASSPATH:-}" ]]; then classpath+=":$SPARK_EXTRA_CLASSPATH"; fi
  if [[ -n "${HADOOP_CONF_DIR:-}" ]]; then classpath="$HADOOP_CONF_DIR:$classpath"; fi
  if [[ -n "${SPARK_CONF_DIR:-}" ]]; then classpath="$SPARK_CONF_DIR:$classpath"; fi
  echo "$classpath"
}

# The executor's JVM options: SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in the order of their index.
executor_java_options() {
  local name
  while read -r name; do
    java_options+=("${!name}")
  done < <(compgen -v SPARK_JAVA_OPT_ | sort -t_ -k4 -n)
}

run() {
  exec tini -s -- "$@"
}

case "${1:-}" in
  driver)
    shift
    run "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    java_options=()
    executor_java_options
    run java "${java_options[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$(spark_classpath)" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME" \
      "$@"
    ;;
  "")
    echo "usage: entrypoint.sh driver ARGS... | executor | COMMAND [ARGS...]" >&2
    exit 2
    ;;
  *)
    run "$@"
    ;;
esac
