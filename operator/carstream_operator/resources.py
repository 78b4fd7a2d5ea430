"""Names of the API objects the operator reads and writes: groups, versions, kinds, labels.

Everything here is a contract with the CRDs in charts/carstream/crds/, with the chart's RBAC and
with spark-operator; nothing here talks to a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

GROUP: Final = "carstream.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

PIPELINE_KIND: Final = "Pipeline"
PIPELINE_PLURAL: Final = "pipelines"
PIPELINE_SHORT_NAME: Final = "cpl"
STAGE_KIND: Final = "PipelineStage"
STAGE_PLURAL: Final = "pipelinestages"
STAGE_SHORT_NAME: Final = "cps"

SPARK_GROUP: Final = "sparkoperator.k8s.io"
SPARK_VERSION: Final = "v1beta2"
SPARK_API_VERSION: Final = f"{SPARK_GROUP}/{SPARK_VERSION}"
SPARK_KIND: Final = "SparkApplication"
SPARK_PLURAL: Final = "sparkapplications"

JOB_NAMES: Final = ("dims", "generate", "enrich", "detect", "count")
RUN_TO_COMPLETION_JOBS: Final = frozenset({"dims", "generate"})
TRIGGER_TYPES: Final = ("processingTime", "availableNow", "realTime")
# The triggers each streaming job runs with: the SUPPORTED_TRIGGERS of its module in
# jobs/carstream/stages/ (a unit test compares them; the operator never imports Spark). count
# keeps state (windows, event_id deduplication), and Spark 4.2's real-time mode runs stateless
# queries only.
JOB_TRIGGERS: Final = {
    "enrich": TRIGGER_TYPES,
    "detect": TRIGGER_TYPES,
    "count": ("processingTime", "availableNow"),
}

# The Spark property that is also a flag of the streaming stages: the operator passes the
# stage's sparkConf value on as the flag, so Spark and the stage agree (the stage sets the
# property from its flag, and a checkpoint freezes it at its first batch).
SHUFFLE_PARTITIONS_CONF: Final = "spark.sql.shuffle.partitions"
SHUFFLE_PARTITIONS_FLAG: Final = "--shuffle-partitions"

# Labels on PipelineStages and SparkApplications: select the children of an object.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PIPELINE: Final = f"{GROUP}/pipeline"
LABEL_STAGE: Final = f"{GROUP}/stage"
LABEL_STAGE_OBJECT: Final = f"{GROUP}/pipelinestage"
LABEL_JOB: Final = f"{GROUP}/job"
LABEL_RUN: Final = f"{GROUP}/run"
MANAGER_NAME: Final = "carstream-operator"

# Annotations on a SparkApplication: what its stage knew when it created it, so that an
# operator restarted between creating the application and recording it in the stage's status
# can take the run number and restart count back from the application itself.
ANNOTATION_RUN: Final = f"{GROUP}/run"
ANNOTATION_RESTARTS: Final = f"{GROUP}/restarts"
ANNOTATION_SPEC_HASH: Final = f"{GROUP}/spec-hash"

FINALIZER: Final = f"{GROUP}/operator"
KOPF_ANNOTATIONS_PREFIX: Final = f"operator.{GROUP}"


def finalizers_without_ours(metadata: Mapping[str, Any]) -> list[str] | None:
    """An object's finalizers without the operator's, or None when it does not hold one."""
    finalizers = list(metadata.get("finalizers") or ())
    if FINALIZER not in finalizers:
        return None
    return [finalizer for finalizer in finalizers if finalizer != FINALIZER]


def stage_object_name(pipeline: str, stage: str) -> str:
    """The name of the PipelineStage of stage `stage` in Pipeline `pipeline`."""
    return f"{pipeline}-{stage}"


def application_name(stage_object: str, run: int) -> str:
    """The name of run number `run` of a stage: unique, so a replacement never collides."""
    return f"{stage_object}-{run}"
