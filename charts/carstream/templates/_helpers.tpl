{{/* Names, labels and the values every template shares. */}}

{{- define "carstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "carstream.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "carstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "carstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: carstream
{{- end }}

{{- define "carstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "carstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Strimzi Kafka cluster: its name prefixes the Services and Secrets Strimzi creates. */}}
{{- define "carstream.kafkaCluster" -}}
{{- default (include "carstream.fullname" .) .Values.kafka.clusterName | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "carstream.kafkaBootstrap" -}}
{{- printf "%s-kafka-bootstrap.%s.svc:%d" (include "carstream.kafkaCluster" .) .Release.Namespace (int .Values.kafka.listenerPort) }}
{{- end }}

{{/* Strimzi writes the cluster CA certificate into this Secret, key ca.crt. */}}
{{- define "carstream.kafkaCaSecret" -}}
{{- printf "%s-cluster-ca-cert" (include "carstream.kafkaCluster" .) }}
{{- end }}

{{/* The KafkaUser (and Secret with its SCRAM password) of a stage: (list $ "enrich"). */}}
{{- define "carstream.kafkaUser" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "carstream.kafkaCluster" $root) (index . 1) }}
{{- end }}

{{- define "carstream.sparkServiceAccount" -}}
{{- default (printf "%s-spark" (include "carstream.fullname" .)) .Values.spark.serviceAccount.name }}
{{- end }}

{{- define "carstream.operatorServiceAccount" -}}
{{- printf "%s-operator" (include "carstream.fullname" .) }}
{{- end }}

{{/*
Which topics (by role: sensors, enriched, alerts, counts, dlq) each Kafka stage reads and
writes: the source of the KafkaUser ACLs. dims touches no topic.
*/}}
{{- define "carstream.stageTopics" -}}
generate:
  reads: []
  writes: [sensors]
enrich:
  reads: [sensors]
  writes: [enriched, dlq]
detect:
  reads: [enriched]
  writes: [alerts, dlq]
count:
  reads: [alerts]
  writes: [counts, dlq]
{{- end }}

{{- define "carstream.pipelineName" -}}
{{- default (include "carstream.fullname" .) .Values.pipeline.name | trunc 30 | trimSuffix "-" }}
{{- end }}

{{- define "carstream.dataClaim" -}}
{{- printf "%s-data" (include "carstream.fullname" .) }}
{{- end }}

{{/*
Spark configuration of every stage that follows from the other values: node selectors, the
shared volume, the S3 endpoint. pipeline.sparkConf entries win over these.
*/}}
{{- define "carstream.derivedSparkConf" -}}
{{- $conf := dict }}
{{- range $key, $value := .Values.spark.driverNodeSelector }}
{{- $_ := set $conf (printf "spark.kubernetes.driver.node.selector.%s" $key) $value }}
{{- end }}
{{- range $key, $value := .Values.spark.executorNodeSelector }}
{{- $_ := set $conf (printf "spark.kubernetes.executor.node.selector.%s" $key) $value }}
{{- end }}
{{- $volume := .Values.storage.sharedVolume }}
{{- if $volume.enabled }}
{{- range $role := list "driver" "executor" }}
{{- $prefix := printf "spark.kubernetes.%s.volumes.persistentVolumeClaim.carstream-data" $role }}
{{- $_ := set $conf (printf "%s.options.claimName" $prefix) (include "carstream.dataClaim" $) }}
{{- $_ := set $conf (printf "%s.mount.path" $prefix) $volume.mountPath }}
{{- $_ := set $conf (printf "%s.mount.readOnly" $prefix) "false" }}
{{- end }}
{{- end }}
{{- $s3 := .Values.storage.s3 }}
{{- if $s3.endpoint }}
{{- $_ := set $conf "spark.hadoop.fs.s3a.endpoint" $s3.endpoint }}
{{- $_ := set $conf "spark.hadoop.fs.s3a.path.style.access" ($s3.pathStyleAccess | toString) }}
{{- end }}
{{- if $s3.credentialsSecret }}
{{- range $role := list "driver" "executor" }}
{{- range $key := list "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" }}
{{- $_ := set $conf (printf "spark.kubernetes.%s.secretKeyRef.%s" $role $key) (printf "%s:%s" $s3.credentialsSecret $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $conf }}
{{- end }}
