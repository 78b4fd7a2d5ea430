"""The operator against a real API server; the test plays spark-operator by patching the status
of the SparkApplications the operator creates."""

from __future__ import annotations

import random
import time

from kubernetes.client import CustomObjectsApi

from carstream_operator import builders
from carstream_operator import resources as r
from carstream_operator.model import StageSpec, parse_time
from carstream_operator.settings import Settings
from tests.fixtures.kube import ControlPlane
from tests.operator.examples import pipeline_spec
from tests.operator.harness import OperatorProcess, SparkOperatorStandIn, wait_for


def arguments(spark_operator: SparkOperatorStandIn, application: str) -> list[str]:
    app = spark_operator.application(application)
    assert app is not None, f"no SparkApplication {application}"
    result: list[str] = app["spec"]["arguments"]
    return result


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def controller_of(obj: dict) -> dict:
    references = [
        ref for ref in obj["metadata"].get("ownerReferences", []) if ref.get("controller")
    ]
    assert len(references) == 1, f"{obj['metadata']['name']}: {references}"
    assert references[0]["blockOwnerDeletion"] is True
    return references[0]


def run_and_wait(spark_operator: SparkOperatorStandIn, stage: str, state: str = "RUNNING") -> str:
    application = spark_operator.wait_for_application(stage)
    spark_operator.set_state(application, state)
    return application


def test_a_pipeline_comes_up_in_dependency_order(
    kube_control_plane: ControlPlane,
    kube_namespace: str,
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
) -> None:
    spark_operator.create_pipeline("demo", pipeline_spec())
    dims = spark_operator.wait_for_application("demo-dims")
    assert dims == "demo-dims-1"
    spark_operator.wait_for_phase("demo-enrich", "Pending", "WaitingForDependencies")
    spark_operator.set_state(dims, "RUNNING")
    spark_operator.wait_for_phase("demo-dims", "Running")
    time.sleep(0.5)
    assert spark_operator.application_names() == ["demo-dims-1"], "dims has not succeeded yet"

    spark_operator.set_state(dims, "COMPLETED")
    generate = spark_operator.wait_for_application("demo-generate")
    enrich = spark_operator.wait_for_application("demo-enrich")
    spark_operator.set_state(enrich, "SUBMITTED")
    spark_operator.wait_for_phase("demo-enrich", "Starting")
    time.sleep(0.5)
    assert spark_operator.application_names("demo-detect") == [], "enrich is not running yet"
    spark_operator.set_state(enrich, "RUNNING")
    detect = spark_operator.wait_for_application("demo-detect")
    time.sleep(0.5)
    assert spark_operator.application_names("demo-count") == [], "detect is not running yet"
    spark_operator.set_state(detect, "RUNNING")
    count = spark_operator.wait_for_application("demo-count")
    spark_operator.set_state(generate, "RUNNING")
    spark_operator.set_state(count, "RUNNING")

    status = wait_for(
        lambda: (
            (p := spark_operator.get_pipeline("demo"))
            and p.get("status", {}).get("phase") == "Running"
            and p["status"]
        ),
        "the pipeline to be Running",
    )
    assert status["readyStages"] == "5/5"
    assert status["restarts"] == 0
    assert [s["phase"] for s in status["stages"]] == ["Succeeded"] + ["Running"] * 4
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {"Ready": "True", "Progressing": "False", "Degraded": "False"}

    added = spark_operator.log.added_names()
    assert added[0] == "demo-dims-1"
    assert added.index("demo-enrich-1") < added.index("demo-detect-1") < added.index("demo-count-1")
    assert len(added) == 5

    # What the operator built: owned by its stage, owned by the pipeline.
    pipeline_uid = spark_operator.get_pipeline("demo")["metadata"]["uid"]  # type: ignore[index]
    for stage in spark_operator.stages():
        assert controller_of(stage)["uid"] == pipeline_uid
        app = spark_operator.application(stage["status"]["application"])
        assert app is not None
        assert controller_of(app)["uid"] == stage["metadata"]["uid"]
        assert app["metadata"]["labels"][r.LABEL_PIPELINE] == "demo"
    enrich_args = arguments(spark_operator, enrich)
    assert enrich_args[:2] == ["stage", "enrich"]
    assert flag(enrich_args, "--checkpoint-location") == (
        "s3a://carstream-test/checkpoints/demo/enrich"
    )
    assert flag(enrich_args, "--bootstrap-servers") == "carstream-kafka-bootstrap:9092"

    pipelines = kube_control_plane.kubectl("get", "pipelines", "-n", kube_namespace).stdout
    header, row = pipelines.splitlines()
    assert header.split() == ["NAME", "PHASE", "READY", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["demo", "Running", "5/5", "0"]
    stages = kube_control_plane.kubectl("get", "cps", "-n", kube_namespace).stdout.splitlines()
    assert stages[0].split() == [
        "NAME",
        "PIPELINE",
        "JOB",
        "PHASE",
        "RESTARTS",
        "NEXT",
        "RUN",
        "BACKLOG",
        "AGE",
    ]
    rows = {line.split()[0]: line.split() for line in stages[1:]}
    assert rows["demo-dims"][1:5] == ["demo", "dims", "Succeeded", "0"]
    assert rows["demo-count"][1:5] == ["demo", "count", "Running", "0"]
    wide = kube_control_plane.kubectl("get", "cpl,cps", "-n", kube_namespace, "-o", "wide").stdout
    assert "APPLICATION" in wide and "demo-enrich-1" in wide

    spark_operator.wait_for_events("demo-enrich", "Created", "ApplicationRunning")
    spark_operator.wait_for_events("demo-dims", "Created", "ApplicationRunning", "Completed")
    spark_operator.wait_for_events("demo-generate", "WaitingForDependencies", "Created")
    assert operator_process.metric("carstream_operator_reconciles_total", kind="stage", result="ok")
    labels = {"namespace": kube_namespace, "pipeline": "demo"}
    phase = operator_process.metric(
        "carstream_operator_stage_phase", **labels, stage="enrich", phase="Running"
    )
    assert phase == 1.0
    created = operator_process.metric(
        "carstream_operator_applications_created_total", **labels, stage="count"
    )
    assert created == 1.0


def test_a_failing_application_is_restarted_with_growing_backoff_then_given_up(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess, kube_namespace: str
) -> None:
    policy = {"maxRestarts": 2, "initialBackoffSeconds": 1, "backoffFactor": 2}
    spark_operator.create_pipeline(
        "flaky", pipeline_spec(stages=[{"name": "enrich", "restartPolicy": policy}])
    )
    application = run_and_wait(spark_operator, "flaky-enrich")
    spark_operator.wait_for_phase("flaky-enrich", "Running")
    delays = []
    for run in (2, 3):
        failed_at = time.monotonic()
        spark_operator.set_state(application, "FAILED", error="executor lost")
        status = spark_operator.wait_for_phase("flaky-enrich", "BackingOff")
        assert "executor lost" in status["message"]
        application = f"flaky-enrich-{run}"
        created_at = wait_for(
            lambda name=application: spark_operator.log.added_at(name), f"{application}", timeout=10
        )
        delays.append(created_at - failed_at)
        spark_operator.set_state(application, "RUNNING")
        status = spark_operator.wait_for_phase("flaky-enrich", "Running")
        assert status["restarts"] == run - 1
    spark_operator.set_state(application, "FAILED", error="executor lost again")
    status = spark_operator.wait_for_phase("flaky-enrich", "Failed", "GaveUp")
    assert status["restarts"] == 2
    # At least the backoff, and not much more (the machine may be busy).
    assert 1.0 <= delays[0] < 2.5, delays
    assert 2.0 <= delays[1] < 3.5, delays
    time.sleep(1.5)
    assert spark_operator.log.added_names() == [
        "flaky-enrich-1",
        "flaky-enrich-2",
        "flaky-enrich-3",
    ]
    assert spark_operator.application_names() == ["flaky-enrich-3"], (
        "the last failure stays for its logs"
    )

    spark_operator.wait_for_events("flaky-enrich", "ApplicationFailed", "Restarting", "GaveUp")
    kinds = {reason: kind for kind, reason, _ in spark_operator.events("flaky-enrich")}
    assert kinds["GaveUp"] == kinds["ApplicationFailed"] == "Warning"
    assert kinds["Restarting"] == "Normal"
    pipeline = wait_for(
        lambda: (
            (p := spark_operator.get_pipeline("flaky")) and p["status"]["phase"] == "Failed" and p
        ),
        "the pipeline to fail",
    )
    assert pipeline["status"]["restarts"] == 2
    labels = {"namespace": kube_namespace, "pipeline": "flaky", "stage": "enrich"}
    assert operator_process.metric("carstream_operator_stage_restarts_total", **labels) == 2.0
    assert operator_process.metric("carstream_operator_stage_gave_up_total", **labels) == 1.0


def test_a_vanished_or_unsubmitted_application_is_restarted(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    policy = {"maxRestarts": 5, "initialBackoffSeconds": 0.2, "backoffFactor": 1}
    spark_operator.create_pipeline(
        "gone", pipeline_spec(stages=[{"name": "detect", "restartPolicy": policy}])
    )
    first = run_and_wait(spark_operator, "gone-detect")
    spark_operator.wait_for_phase("gone-detect", "Running")
    spark_operator.delete_application(first)
    wait_for(
        lambda: spark_operator.log.added_at("gone-detect-2"), "a replacement of the deleted one"
    )
    spark_operator.wait_for_events("gone-detect", "ApplicationVanished")
    spark_operator.set_state("gone-detect-2", "SUBMISSION_FAILED", error="spark-submit failed")
    wait_for(
        lambda: spark_operator.log.added_at("gone-detect-3"), "a replacement of the unsubmitted one"
    )
    spark_operator.wait_for_events("gone-detect", "SubmissionFailed")
    wait_for(
        lambda: spark_operator.stage_status("gone-detect").get("restarts") == 2, "two restarts"
    )


def test_time_limits_and_start_deadlines(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess, kube_namespace: str
) -> None:
    stages = [
        {"name": "generate", "timeLimitSeconds": 2},
        {
            "name": "enrich",
            "startDeadlineSeconds": 1,
            "restartPolicy": {"initialBackoffSeconds": 0.5, "maxRestarts": 3},
        },
    ]
    spark_operator.create_pipeline("limits", pipeline_spec(stages=stages))
    generate = run_and_wait(spark_operator, "limits-generate")
    enrich = spark_operator.wait_for_application("limits-enrich")
    # enrich: spark-operator never picks it up; it is stuck before running.
    spark_operator.set_state(enrich, "SUBMITTED")
    status = spark_operator.wait_for_phase(
        "limits-enrich", "BackingOff", "StartDeadlineExceeded", timeout=15
    )
    assert "did not start running within 1s" in status["message"]
    wait_for(lambda: spark_operator.log.added_at("limits-enrich-2"), "enrich's restart")
    assert spark_operator.application(enrich) is None

    status = spark_operator.wait_for_phase(
        "limits-generate", "Succeeded", "TimeLimitReached", timeout=15
    )
    # The limit counts from the stage's startTime (before its application was created); the
    # watch sees the deletion after it happened, never before.
    deleted = wait_for(lambda: spark_operator.log.deleted_at(generate), "generate's deletion")
    deleted_wall = time.time() - (time.monotonic() - deleted)
    started = parse_time(status["startTime"])
    assert started is not None
    stopped_after = deleted_wall - started.timestamp()
    assert 2.0 <= stopped_after < 10, f"stopped {stopped_after:.2f} s after its start"
    assert status["ready"] is True
    assert spark_operator.application(generate) is None, "stopped at its time limit"
    spark_operator.wait_for_events("limits-generate", "TimeLimitReached")
    deadlines = operator_process.metric(
        "carstream_operator_stage_deadlines_total",
        namespace=kube_namespace,
        pipeline="limits",
        stage="generate",
        deadline="time-limit",
    )
    assert deadlines == 1.0


def test_a_scheduled_stage_runs_on_ticks_never_two_at_once(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    count = {
        "name": "count",
        "trigger": {"type": "availableNow"},
        "schedule": "* * * * * */2",  # every 2 seconds
    }
    spark_operator.create_pipeline("cron", pipeline_spec(stages=[count]))
    status = spark_operator.wait_for_phase("cron-count", "Scheduled")
    assert status["nextRunTime"]
    assert spark_operator.application_names() == [], "idle until the first tick"

    first = spark_operator.wait_for_application("cron-count", timeout=5)
    spark_operator.set_state(first, "RUNNING")
    time.sleep(4.5)  # two more ticks while the first run goes on
    assert spark_operator.application_names() == [first], "a tick never starts a second run"
    spark_operator.wait_for_events("cron-count", "RunSkipped")
    spark_operator.set_state(first, "COMPLETED")
    status = spark_operator.wait_for_phase("cron-count", "Scheduled", "Completed")
    assert status["lastSuccessTime"]
    wait_for(lambda: spark_operator.application(first) is None, "the finished run to be deleted")
    assert spark_operator.application_names("cron-count") in ([], ["cron-count-2"])

    second = wait_for(
        lambda: spark_operator.log.added_at("cron-count-2"), "the next tick's run", timeout=5
    )
    spark_operator.set_state("cron-count-2", "COMPLETED")
    third = wait_for(
        lambda: spark_operator.log.added_at("cron-count-3"), "the run after", timeout=5
    )
    assert 1.0 < third - second < 4.5
    assert spark_operator.log.max_live_per_stage["cron-count"] == 1


def test_suspend_stops_the_application_and_resume_keeps_its_checkpoint(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    stages = [{"name": "dims"}, {"name": "enrich", "dependsOn": ["dims"]}]
    spark_operator.create_pipeline("pause", pipeline_spec(stages=stages))
    run_and_wait(spark_operator, "pause-dims", "COMPLETED")
    enrich = run_and_wait(spark_operator, "pause-enrich")
    spark_operator.wait_for_phase("pause-enrich", "Running")
    checkpoint = flag(arguments(spark_operator, enrich), "--checkpoint-location")

    spark_operator.patch_pipeline(
        "pause", [{"op": "replace", "path": "/spec/suspend", "value": True}]
    )
    spark_operator.wait_for_phase("pause-enrich", "Suspended")
    wait_for(lambda: spark_operator.application(enrich) is None, "the suspended application to go")
    assert spark_operator.stage_status("pause-dims")["phase"] == "Succeeded"
    wait_for(
        lambda: spark_operator.get_pipeline("pause")["status"]["phase"] == "Suspended",  # type: ignore[index]
        "the pipeline to be Suspended",
    )

    spark_operator.patch_pipeline(
        "pause", [{"op": "replace", "path": "/spec/suspend", "value": False}]
    )
    resumed = spark_operator.wait_for_application("pause-enrich")
    assert resumed == "pause-enrich-2"
    assert flag(arguments(spark_operator, resumed), "--checkpoint-location") == checkpoint
    spark_operator.wait_for_phase("pause-enrich", "Starting", "Resumed")
    assert spark_operator.application_names("pause-dims") == ["pause-dims-1"], (
        "dims does not run again"
    )
    spark_operator.wait_for_events("pause-enrich", "Suspended", "Resumed")


def test_a_spec_change_replaces_the_running_application(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    stages = [{"name": "enrich", "restartPolicy": {"initialBackoffSeconds": 0.1}}]
    spark_operator.create_pipeline("change", pipeline_spec(stages=stages))
    first = run_and_wait(spark_operator, "change-enrich")
    spark_operator.wait_for_phase("change-enrich", "Running")
    spark_operator.set_state(first, "FAILED")
    wait_for(lambda: spark_operator.log.added_at("change-enrich-2"), "a restart")
    spark_operator.set_state("change-enrich-2", "RUNNING")
    spark_operator.wait_for_phase("change-enrich", "Running")
    checkpoint = flag(arguments(spark_operator, "change-enrich-2"), "--checkpoint-location")

    spark_operator.patch_pipeline(
        "change",
        [
            {
                "op": "add",
                "path": "/spec/stages/0/sparkConf",
                "value": {"spark_operator.executor.cores": "2"},
            }
        ],
    )
    wait_for(lambda: spark_operator.log.added_at("change-enrich-3"), "the replacement")
    replacement = spark_operator.application("change-enrich-3")
    assert replacement is not None
    assert replacement["spec"]["sparkConf"]["spark_operator.executor.cores"] == "2"
    assert flag(replacement["spec"]["arguments"], "--checkpoint-location") == checkpoint
    assert spark_operator.application("change-enrich-2") is None
    status = spark_operator.wait_for_phase("change-enrich", "Starting", "Replaced")
    assert status["restarts"] == 1, "a replacement is not a restart"
    spark_operator.wait_for_events("change-enrich", "SpecChanged", "Replaced")
    assert spark_operator.log.max_live_per_stage["change-enrich"] == 1


def test_deleting_a_pipeline_leaves_no_orphans(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    spark_operator.create_pipeline(
        "bye", pipeline_spec(stages=[{"name": "dims"}, {"name": "detect"}])
    )
    dims = run_and_wait(spark_operator, "bye-dims")
    detect = run_and_wait(spark_operator, "bye-detect")
    spark_operator.wait_for_phase("bye-detect", "Running")
    pipeline_uid = spark_operator.get_pipeline("bye")["metadata"]["uid"]  # type: ignore[index]
    stage_uids = {
        stage["metadata"]["name"]: stage["metadata"]["uid"] for stage in spark_operator.stages()
    }

    spark_operator.delete_pipeline("bye")
    wait_for(lambda: spark_operator.get_pipeline("bye") is None, "the pipeline to be gone")
    # This API server has no garbage collector: what it would delete must point at its owner.
    for stage in spark_operator.stages():
        assert controller_of(stage)["uid"] == pipeline_uid
    for application in (dims, detect):
        app = spark_operator.application(application)
        assert app is not None
        owner = controller_of(app)
        assert owner["kind"] == "PipelineStage"
        assert stage_uids[owner["name"]] == owner["uid"]
    # The collector deletes the stages: the operator lets them go and starts nothing new.
    for name in stage_uids:
        spark_operator.custom.delete_namespaced_custom_object(
            r.GROUP, r.VERSION, spark_operator.namespace, r.STAGE_PLURAL, name
        )
    wait_for(lambda: not spark_operator.stages(), "the stages to be gone")
    time.sleep(0.5)
    assert sorted(spark_operator.log.added_names()) == sorted([dims, detect])


def test_a_stopped_operator_leaves_no_finalizer_so_uninstalling_never_hangs(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    """`helm uninstall` deletes the operator and the Pipeline at once: with kopf's finalizers
    left behind, the Pipeline, its stages and their pods would stay forever."""
    spark_operator.create_pipeline("leaving", pipeline_spec(stages=[{"name": "dims"}]))
    run_and_wait(spark_operator, "leaving-dims")

    def finalizers() -> dict[str, list[str]]:
        pipeline = spark_operator.get_pipeline("leaving")
        objects = [*([pipeline] if pipeline else []), *spark_operator.stages()]
        return {o["metadata"]["name"]: o["metadata"].get("finalizers") or [] for o in objects}

    wait_for(
        lambda: all(r.FINALIZER in found for found in finalizers().values()),
        "kopf's finalizers on the pipeline and its stage",
    )
    operator_process.stop()
    assert finalizers() == {"leaving": [], "leaving-dims": []}
    assert "released the finalizers of 2 objects" in operator_process.log()

    spark_operator.delete_pipeline("leaving")
    wait_for(lambda: spark_operator.get_pipeline("leaving") is None, "the pipeline to be gone")

    operator_process.start()  # kopf puts its finalizer back on what is left
    wait_for(lambda: r.FINALIZER in finalizers()["leaving-dims"], "the finalizer back")


def test_an_application_created_just_before_a_crash_is_adopted(
    kube_control_plane: ControlPlane,
    spark_operator: SparkOperatorStandIn,
    operator_process: OperatorProcess,
) -> None:
    spark_operator.create_pipeline("crash", pipeline_spec(stages=[{"name": "enrich"}]))
    first = run_and_wait(spark_operator, "crash-enrich")
    spark_operator.wait_for_phase("crash-enrich", "Running")
    operator_process.kill()

    # The state an operator leaves when it dies after creating the restart of a failed run
    # and before deleting the failed one or recording anything in the stage's status.
    spark_operator.set_state(first, "FAILED")
    stage = spark_operator.stage("crash-enrich")
    restart = builders.spark_application(
        name="crash-enrich-2",
        namespace=spark_operator.namespace,
        stage_object="crash-enrich",
        spec=StageSpec.from_dict(stage["spec"]),
        run=2,
        restarts=1,
        settings=Settings(),
    )
    restart["metadata"]["ownerReferences"] = [
        {
            "apiVersion": r.API_VERSION,
            "kind": r.STAGE_KIND,
            "name": "crash-enrich",
            "uid": stage["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    CustomObjectsApi(kube_control_plane.api_client()).create_namespaced_custom_object(
        r.SPARK_GROUP, r.SPARK_VERSION, spark_operator.namespace, r.SPARK_PLURAL, restart
    )

    operator_process.start()
    status = spark_operator.wait_for_phase("crash-enrich", "Starting", "Adopted")
    assert (status["run"], status["restarts"], status["application"]) == (2, 1, "crash-enrich-2")
    wait_for(lambda: spark_operator.application(first) is None, "the failed run to be deleted")
    spark_operator.set_state("crash-enrich-2", "RUNNING")
    spark_operator.wait_for_phase("crash-enrich", "Running")
    assert spark_operator.log.added_names() == ["crash-enrich-1", "crash-enrich-2"]


def test_an_operator_killed_mid_reconcile_creates_no_duplicate_and_keeps_counting(
    spark_operator: SparkOperatorStandIn, operator_process: OperatorProcess
) -> None:
    policy = {"maxRestarts": 20, "initialBackoffSeconds": 0, "maxBackoffSeconds": 0}
    spark_operator.create_pipeline(
        "kill", pipeline_spec(stages=[{"name": "enrich", "restartPolicy": policy}])
    )
    application = run_and_wait(spark_operator, "kill-enrich")
    spark_operator.wait_for_phase("kill-enrich", "Running")
    chaos = random.Random(7)
    kills = 5
    for failure in range(1, kills + 1):
        spark_operator.set_state(application, "FAILED")
        # Somewhere in the reconcile that follows: before, during or after its writes.
        time.sleep(chaos.uniform(0.0, 0.08))
        operator_process.kill()
        operator_process.start()
        application = f"kill-enrich-{failure + 1}"
        wait_for(lambda name=application: spark_operator.application(name), application, timeout=20)
        spark_operator.set_state(application, "RUNNING")
        status = spark_operator.wait_for_phase("kill-enrich", "Running")
        assert status["run"] == failure + 1
        assert status["restarts"] == failure
    assert spark_operator.log.added_names() == [f"kill-enrich-{run}" for run in range(1, kills + 2)]
    assert spark_operator.log.max_live_per_stage["kill-enrich"] == 1
    assert operator_process.starts == kills + 1
