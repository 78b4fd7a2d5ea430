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

{{/*
The Kafka cluster: its name prefixes the Services and Secrets of both Kafka modes (in strimzi
mode Strimzi creates them, in standalone mode this chart does, with the same names).
*/}}
{{- define "carstream.kafkaCluster" -}}
{{- default (include "carstream.fullname" .) .Values.kafka.clusterName | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "carstream.kafkaBootstrap" -}}
{{- printf "%s-kafka-bootstrap.%s.svc:%d" (include "carstream.kafkaCluster" .) .Release.Namespace (int .Values.kafka.listenerPort) }}
{{- end }}

{{/* kafka.mode: strimzi (Strimzi's cluster operator runs Kafka) or standalone (this chart does). */}}
{{- define "carstream.kafkaStandalone" -}}
{{- if eq .Values.kafka.mode "standalone" }}true{{ end }}
{{- end }}

{{/* What the stages speak: TLS + SCRAM with Strimzi, SCRAM over plain TCP in standalone mode. */}}
{{- define "carstream.kafkaSecurityProtocol" -}}
{{- if include "carstream.kafkaStandalone" . }}SASL_PLAINTEXT{{ else }}SASL_SSL{{ end }}
{{- end }}

{{/* The labels that select the Kafka broker pods (for network policies). */}}
{{- define "carstream.kafkaPodSelector" -}}
{{- if include "carstream.kafkaStandalone" . }}
{{- include "carstream.selectorLabels" . }}
app.kubernetes.io/component: kafka
{{- else }}
{{- printf "strimzi.io/cluster: %s" (include "carstream.kafkaCluster" .) }}
{{- end }}
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

{{/* Every Kafka user of the chart: one per Kafka stage, the read-only viewer, and the
operator (it reads the backlogs of stages with spec.wake). */}}
{{- define "carstream.kafkaUserRoles" -}}
{{- toJson (list "generate" "enrich" "detect" "count" "viewer" "operator") }}
{{- end }}

{{/*
A KafkaTopic's spec, from a topic of kafka.topics: (list $ $topic). Strimzi mode renders it as
a KafkaTopic, standalone mode puts it into the plan of `carstream kafka-setup`.
*/}}
{{- define "carstream.kafkaTopicSpec" -}}
{{- $root := index . 0 }}
{{- $topic := index . 1 -}}
topicName: {{ $topic.name | quote }}
partitions: {{ $topic.partitions }}
replicas: {{ $root.Values.kafka.replicationFactor }}
config:
  retention.ms: {{ $topic.retentionMs | int64 }}
  min.insync.replicas: {{ $root.Values.kafka.minInsyncReplicas }}
{{- end }}

{{/*
The ACLs of a Kafka user, in the words of a KafkaUser's spec.authorization.acls: (list $ ROLE),
ROLE a Kafka stage (generate, enrich, detect, count), viewer or operator. A stage may touch
only the topics it reads and writes; the viewer may read every topic; the operator may only
describe the topics stages read and the stages' groups (end offsets, offsets by time,
committed offsets: never a record). Both Kafka modes use this list.
*/}}
{{- define "carstream.kafkaUserAcls" -}}
{{- $root := index . 0 }}
{{- $user := index . 1 }}
{{- $topics := $root.Values.kafka.topics }}
{{- if eq $user "viewer" }}
{{- range $role, $topic := $topics }}
- resource:
    type: topic
    name: {{ $topic.name | quote }}
    patternType: literal
  operations: [Read, Describe]
{{- end }}
- resource:
    type: group
    name: {{ printf "%s-viewer" (include "carstream.kafkaCluster" $root) | quote }}
    patternType: prefix
  operations: [Read]
{{- else if eq $user "operator" }}
{{- range $role := list "sensors" "enriched" "alerts" }}
- resource:
    type: topic
    name: {{ (index $topics $role).name | quote }}
    patternType: literal
  operations: [Describe]
{{- end }}
- resource:
    type: group
    name: {{ printf "%s." (include "carstream.pipelineName" $root) | quote }}
    patternType: prefix
  operations: [Describe]
{{- else }}
{{- $access := index (include "carstream.stageTopics" $root | fromYaml) $user }}
{{- range $role := $access.reads }}
- resource:
    type: topic
    name: {{ (index $topics $role).name | quote }}
    patternType: literal
  operations: [Read, Describe]
{{- end }}
{{- range $role := $access.writes }}
- resource:
    type: topic
    name: {{ (index $topics $role).name | quote }}
    patternType: literal
  operations: [Write, Describe]
{{- end }}
{{- if $access.reads }}
# Spark's Kafka source names its consumer groups with this prefix.
- resource:
    type: group
    name: {{ $root.Values.kafka.consumerGroupPrefix | quote }}
    patternType: prefix
  operations: [Read]
# The stage commits what it has processed to <pipeline>.<query> for lag tools
# (docs/observability.md).
- resource:
    type: group
    name: {{ printf "%s." (include "carstream.pipelineName" $root) | quote }}
    patternType: prefix
  operations: [Read, Describe]
{{- end }}
{{- end }}
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
Spark configuration of every stage that follows from the other values: node selectors and the
shared volume (s3a's settings come from the Pipeline's storage.s3, through the operator).
pipeline.sparkConf entries win over these.
*/}}
{{- define "carstream.derivedSparkConf" -}}
{{- $conf := dict }}
{{- range $key, $value := .Values.spark.driverNodeSelector }}
{{- $_ := set $conf (printf "spark.kubernetes.driver.node.selector.%s" $key) $value }}
{{- end }}
{{- range $key, $value := .Values.spark.executorNodeSelector }}
{{- $_ := set $conf (printf "spark.kubernetes.executor.node.selector.%s" $key) $value }}
{{- end }}
{{- $lineage := .Values.monitoring.lineage }}
{{- if ne $lineage.transport "off" }}
{{- $_ := set $conf "spark.extraListeners" "io.openlineage.spark.agent.OpenLineageSparkListener" }}
{{- $_ := set $conf "spark.openlineage.transport.type" $lineage.transport }}
{{- $_ := set $conf "spark.openlineage.namespace" (default (include "carstream.pipelineName" .) $lineage.namespace) }}
{{- if eq $lineage.transport "http" }}
{{- $_ := set $conf "spark.openlineage.transport.url" (required "monitoring.lineage.url is required with transport http" $lineage.url) }}
{{- end }}
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
{{- toYaml $conf }}
{{- end }}

{{/* The in-release S3 server (storage.s3Server): its name, Secret and selector. */}}
{{- define "carstream.s3Server" -}}
{{- printf "%s-s3" (include "carstream.fullname" .) }}
{{- end }}

{{- define "carstream.s3ServerEndpoint" -}}
{{- printf "http://%s.%s.svc:%d" (include "carstream.s3Server" .) .Release.Namespace (int .Values.storage.s3Server.port) }}
{{- end }}

{{- define "carstream.s3ServerSecret" -}}
{{- printf "%s-s3-credentials" (include "carstream.fullname" .) }}
{{- end }}

{{- define "carstream.s3ServerSelector" -}}
{{ include "carstream.selectorLabels" . }}
app.kubernetes.io/component: s3-server
{{- end }}

{{/* The Pipeline's storage.s3: the in-release server's, or storage.s3's (JSON, may be {}). */}}
{{- define "carstream.s3Storage" -}}
{{- $s3 := dict }}
{{- if .Values.storage.s3Server.enabled }}
{{- $_ := set $s3 "endpoint" (include "carstream.s3ServerEndpoint" .) }}
{{- $_ := set $s3 "credentialsSecret" (dict "name" (include "carstream.s3ServerSecret" .)) }}
{{- else }}
{{- with .Values.storage.s3.endpoint }}{{ $_ := set $s3 "endpoint" . }}{{ end }}
{{- with .Values.storage.s3.region }}{{ $_ := set $s3 "region" . }}{{ end }}
{{- with .Values.storage.s3.credentialsSecret }}{{ $_ := set $s3 "credentialsSecret" (dict "name" .) }}{{ end }}
{{- end }}
{{- toJson $s3 }}
{{- end }}

{{/* Standalone Kafka: the StatefulSet, its headless Service and the admin's Secret. */}}
{{- define "carstream.kafkaStatefulSet" -}}
{{- printf "%s-kafka" (include "carstream.kafkaCluster" .) }}
{{- end }}

{{- define "carstream.kafkaBrokersService" -}}
{{- printf "%s-kafka-brokers" (include "carstream.kafkaCluster" .) }}
{{- end }}

{{- define "carstream.kafkaAdminSecret" -}}
{{- printf "%s-kafka-admin" (include "carstream.kafkaCluster" .) }}
{{- end }}

{{/*
A Kafka user's password Secret in standalone mode, shaped like the Secret Strimzi's user
operator writes for a SCRAM KafkaUser (keys password and sasl.jaas.config): (list $ NAME).
The password is generated once: an upgrade reads it back from the cluster (lookup), and the
Secret stays when the release is uninstalled, like the broker's volume that knows the password.
*/}}
{{- define "carstream.kafkaPasswordSecret" -}}
{{- $root := index . 0 }}
{{- $name := index . 1 }}
{{- $existing := lookup "v1" "Secret" $root.Release.Namespace $name }}
{{- $password := randAlphaNum 32 }}
{{- if and $existing $existing.data }}
{{- with index $existing.data "password" }}
{{- $password = b64dec . }}
{{- end }}
{{- end -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "carstream.labels" $root | nindent 4 }}
    app.kubernetes.io/component: kafka
    carstream.io/kafka-user: {{ $name }}
  annotations:
    helm.sh/resource-policy: keep
type: Opaque
data:
  password: {{ $password | b64enc }}
  sasl.jaas.config: {{ printf "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"%s\" password=\"%s\";" $name $password | b64enc }}
{{- end }}

{{/* Egress rules of a pod that talks to the Kubernetes API only: the kubernetes Service's
port and the API server's own (operator.apiServerPorts), and DNS. */}}
{{- define "carstream.apiServerEgress" -}}
- ports:
    {{- range .Values.operator.apiServerPorts }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}

{{/* The restricted Pod Security context of every carstream pod. */}}
{{- define "carstream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsUser }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "carstream.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Kafka client settings of carstream's containers, as the CARSTREAM_* variables. */}}
{{- define "carstream.kafkaClientEnv" -}}
{{- $root := index . 0 }}
{{- $user := index . 1 }}
{{- $secret := index . 2 -}}
- name: CARSTREAM_BOOTSTRAP_SERVERS
  value: {{ include "carstream.kafkaBootstrap" $root | quote }}
- name: CARSTREAM_KAFKA_SECURITY_PROTOCOL
  value: {{ include "carstream.kafkaSecurityProtocol" $root }}
- name: CARSTREAM_KAFKA_SASL_MECHANISM
  value: SCRAM-SHA-512
- name: CARSTREAM_KAFKA_USERNAME
  value: {{ $user | quote }}
- name: CARSTREAM_KAFKA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: password
{{- end }}

{{/* Strimzi mode with monitoring.podMonitors: the ConfigMap (and its key) with the JMX
exporter rules of the Kafka pods, which the Kafka resource's metricsConfig names. */}}
{{- define "carstream.kafkaMetricsConfigMap" -}}
{{- printf "%s-kafka-metrics" (include "carstream.kafkaCluster" .) }}
{{- end }}

{{- define "carstream.kafkaMetricsConfigKey" -}}
kafka-metrics-config.yml
{{- end }}
