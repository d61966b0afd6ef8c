"""Failures are kept (the failed-events queue) and seen (alarms on the failure topic), and
the two Lambdas are set up for the claim protocol (timeouts, retries, reserved concurrency)."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk.assertions import Annotations, Match

from spikebatch.control import idempotency
from stacks.config import SUBMIT_JOB_TPS

SERVICES = ("spikebatch-submit", "spikebatch-run-record")


def _queue(synthesized) -> tuple[str, dict[str, Any]]:
    ((queue_id, queue),) = synthesized.of_type("AWS::SQS::Queue").items()
    return queue_id, queue["Properties"]


def _topic(synthesized) -> str:
    (topic_id,) = synthesized.of_type("AWS::SNS::Topic")
    return topic_id


def test_failed_events_queue_is_encrypted_ssl_only_and_keeps_events_14_days(synthesized):
    queue_id, queue = _queue(synthesized)
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert queue["VisibilityTimeout"] > idempotency.HANDLER_TIMEOUT_S  # a redrive holds it
    (policy,) = synthesized.props("AWS::SQS::QueuePolicy")
    statements = policy["PolicyDocument"]["Statement"]
    (deny,) = [s for s in statements if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # Only EventBridge's job-state rule may send to it from outside the account's roles.
    (allow,) = [s for s in statements if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    assert allow["Action"] == "sqs:SendMessage"
    assert allow["Resource"] == {"Fn::GetAtt": [queue_id, "Arn"]}


def test_both_lambdas_retry_twice_then_keep_the_event_in_the_queue(synthesized):
    queue_id, _ = _queue(synthesized)
    configs = {
        c["FunctionName"]["Ref"]: c for c in synthesized.props("AWS::Lambda::EventInvokeConfig")
    }
    for service in SERVICES:
        function_id, _ = synthesized.function(service)
        config = configs[function_id]
        assert config["MaximumRetryAttempts"] == 2
        # Events throttled by reserved concurrency wait in Lambda's queue this long (the
        # maximum); past it, they go to the queue too, never nowhere.
        assert config["MaximumEventAgeInSeconds"] == 6 * 3600
        assert config["DestinationConfig"] == {
            "OnFailure": {"Destination": {"Fn::GetAtt": [queue_id, "Arn"]}}
        }


def test_job_state_changes_eventbridge_cannot_deliver_go_to_the_queue(synthesized):
    queue_id, _ = _queue(synthesized)
    run_record, _ = synthesized.function("spikebatch-run-record")
    targets = [t for r in synthesized.props("AWS::Events::Rule") for t in r["Targets"]]
    (target,) = [t for t in targets if t["Arn"] == {"Fn::GetAtt": [run_record, "Arn"]}]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 86400, "MaximumRetryAttempts": 4}


def test_a_throttled_run_record_event_outlasts_the_throttle_window(synthesized):
    """With reserved concurrency the run-record Lambda is throttled under a burst. Lambda
    keeps a throttled event queued for up to 6 h (then it goes to the failed-events queue),
    EventBridge retries a refused hand-over for up to 24 h (then the same queue), and the
    queue keeps it 14 days: each layer outlasts the one before it."""
    queue_id, queue = _queue(synthesized)
    run_record, function = synthesized.function("spikebatch-run-record")
    assert function["ReservedConcurrentExecutions"] == (
        synthesized.config.run_record_reserved_concurrency
    )
    (config,) = [
        c
        for c in synthesized.props("AWS::Lambda::EventInvokeConfig")
        if c["FunctionName"]["Ref"] == run_record
    ]
    targets = [t for r in synthesized.props("AWS::Events::Rule") for t in r["Targets"]]
    (target,) = [t for t in targets if t["Arn"] == {"Fn::GetAtt": [run_record, "Arn"]}]
    lambda_queue_s = config["MaximumEventAgeInSeconds"]
    eventbridge_s = target["RetryPolicy"]["MaximumEventAgeInSeconds"]
    assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}
    assert 3600 < lambda_queue_s < eventbridge_s < queue["MessageRetentionPeriod"]


def test_lambda_timeouts_fit_the_claim_protocol(synthesized):
    """A Lambda is dead before its claim's lease runs out, and the lease runs out before
    Lambda's first retry: the retry of a dead invocation takes its work over."""
    for service in SERVICES:
        _, function = synthesized.function(service)
        assert function["Timeout"] == idempotency.HANDLER_TIMEOUT_S
    assert idempotency.HANDLER_TIMEOUT_S < idempotency.LEASE_S < idempotency.FIRST_RETRY_S


def test_submit_lambda_concurrency_is_reserved_below_batchs_submit_job_rate(synthesized):
    """At most 10 submissions run at once; each takes at least a few hundred ms of AWS
    calls, so SubmitJob stays far below Batch's 50/s, and a burst queues in Lambda."""
    _, submit = synthesized.function("spikebatch-submit")
    reserved = synthesized.config.submit_reserved_concurrency
    assert submit["ReservedConcurrentExecutions"] == reserved == 10
    assert reserved <= SUBMIT_JOB_TPS == 50
    # One full vCPU: a 10,000-recording array writes its 20,002 records within the timeout.
    assert submit["MemorySize"] == 1769


def _alarms(synthesized) -> dict[str, dict[str, Any]]:
    return {a["MetricName"]: a for a in synthesized.props("AWS::CloudWatch::Alarm")}


def test_every_alarm_notifies_the_failure_topic_on_the_first_bad_period(synthesized):
    alarms = synthesized.props("AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": _topic(synthesized)}]
        threshold = 0
        if alarm["MetricName"] == "ApproximateAgeOfOldestMessage":
            threshold = synthesized.config.failed_events_alarm_age_days * 86400
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
            "GreaterThanThreshold",
            threshold,
        )
        assert alarm["EvaluationPeriods"] == 1 and alarm["TreatMissingData"] == "notBreaching"
        assert alarm["AlarmDescription"]


def test_alarms_watch_the_queue_both_lambdas_and_jobs_stuck_in_runnable(synthesized):
    queue_id, _ = _queue(synthesized)
    alarms = synthesized.props("AWS::CloudWatch::Alarm")
    queued = [a for a in alarms if a["MetricName"] == "ApproximateNumberOfMessagesVisible"]
    assert [a["Dimensions"] for a in queued] == [
        [{"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}]
    ]
    errors = [a for a in alarms if a["MetricName"] == "Errors"]
    watched = {a["Dimensions"][0]["Value"]["Ref"] for a in errors}
    assert watched == {synthesized.function(s)[0] for s in SERVICES}
    assert all(a["Namespace"] == "AWS/Lambda" and a["Statistic"] == "Sum" for a in errors)
    (stuck,) = [a for a in alarms if a["MetricName"] == "JobsBlockedInRunnable"]
    (metric_filter,) = synthesized.props("AWS::Logs::MetricFilter")
    assert metric_filter["MetricTransformations"] == [
        {
            "MetricName": "JobsBlockedInRunnable",
            "MetricNamespace": stuck["Namespace"],
            "MetricValue": "1",
        }
    ]
    blocked_log = metric_filter["LogGroupName"]["Ref"]
    (rule,) = [
        r
        for r in synthesized.props("AWS::Events::Rule")
        if r["EventPattern"]["detail-type"] == ["Batch Job Queue Blocked"]
    ]
    assert rule["EventPattern"]["source"] == ["aws.batch"]
    assert len(rule["EventPattern"]["detail"]["jobQueue"]) == 2  # both of this app's queues
    assert blocked_log in json.dumps(rule["Targets"])


def test_cloudwatch_may_publish_to_the_topic_only_for_this_accounts_alarms(synthesized):
    (key_id,) = synthesized.of_type("AWS::KMS::Key")
    key_statements = synthesized.resources[key_id]["Properties"]["KeyPolicy"]["Statement"]
    (policy,) = synthesized.props("AWS::SNS::TopicPolicy")
    for statements, actions in (
        (key_statements, ["kms:Decrypt", "kms:GenerateDataKey*"]),
        (policy["PolicyDocument"]["Statement"], "sns:Publish"),
    ):
        (allow,) = [
            s for s in statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
        ]
        assert allow["Action"] == actions
        assert allow["Condition"]["StringEquals"] == {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"}
        }
        assert ":alarm:*" in json.dumps(allow["Condition"]["ArnLike"]["aws:SourceArn"])


def test_the_cli_finds_the_queue_and_functions_in_the_outputs(synthesized):
    outputs = synthesized.template["Outputs"]
    queue_id, _ = _queue(synthesized)
    assert outputs["FailedEventsQueueUrl"]["Value"] == {"Ref": queue_id}
    assert outputs["SubmitFunctionName"]["Value"] == {"Ref": synthesized.function(SERVICES[0])[0]}
    assert outputs["RunRecordFunctionName"]["Value"] == {
        "Ref": synthesized.function(SERVICES[1])[0]
    }


def test_old_failed_events_alarm_before_sqs_drops_them_and_repeats_daily(synthesized):
    """Alarm when the oldest failed event is failed_events_alarm_age_days old (3 by
    default, days before SQS deletes it at 14), and a daily schedule sets that alarm back
    to OK so a backlog that is still there alarms (and mails) again."""
    queue_id, queue = _queue(synthesized)
    ((alarm_id, alarm),) = [
        (k, r["Properties"])
        for k, r in synthesized.of_type("AWS::CloudWatch::Alarm").items()
        if r["Properties"]["MetricName"] == "ApproximateAgeOfOldestMessage"
    ]
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue_id, "QueueName"]}}
    ]
    assert alarm["Statistic"] == "Maximum" and alarm["Period"] == 3600
    assert alarm["Threshold"] == 3 * 86400 < queue["MessageRetentionPeriod"]
    (schedule,) = synthesized.props("AWS::Scheduler::Schedule")
    assert schedule["ScheduleExpression"] == "rate(1 day)"
    target = schedule["Target"]
    assert target["Arn"]["Fn::Join"][1][-1] == ":scheduler:::aws-sdk:cloudwatch:setAlarmState"
    parts = target["Input"]["Fn::Join"][1]
    assert {"Ref": alarm_id} in parts  # AlarmName
    assert '"StateValue":"OK"' in "".join(p for p in parts if isinstance(p, str))
    role_id = target["RoleArn"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in synthesized.props("AWS::IAM::Policy")
        if {"Ref": role_id} in p["Roles"]
        for s in p["PolicyDocument"]["Statement"]
    ]
    assert statements == [
        {
            "Action": "cloudwatch:SetAlarmState",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [alarm_id, "Arn"]},
        }
    ]


def test_no_alarm_email_warns_at_synth_and_tells_the_cli(synthesized):
    """cdk.json leaves alarm_email null: synth warns naming the setting, and the stack
    output lets `spikebatch status` say that failures reach no one."""
    assert synthesized.config.alarm_email is None
    assert synthesized.of_type("AWS::SNS::Subscription") == {}
    found = Annotations.from_stack(synthesized.stack).find_warning("*", _any_text())
    assert any("spikebatch.alarm_email" in str(w.entry.data) for w in found), found
    output = synthesized.template["Outputs"]["FailureAlertsSubscribed"]
    assert output["Value"] == "false"


def _any_text() -> Any:
    return Match.string_like_regexp(".*")


def test_an_alarm_email_subscribes_and_drops_the_warning():
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    import app as cdk_app
    from tests.infra.build_inputs import cdk_json_context

    context = cdk_json_context()
    context["spikebatch:alarm_email"] = "lab@example.org"
    app = cdk.App(context=context)
    stack = cdk_app.build(app)
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "lab@example.org"}
    )
    assert template.to_json()["Outputs"]["FailureAlertsSubscribed"]["Value"] == "true"
    found = Annotations.from_stack(stack).find_warning("*", _any_text())
    assert not any("spikebatch.alarm_email" in str(w.entry.data) for w in found)
