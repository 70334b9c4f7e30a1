"""Account settings: PutAccountSetting, PutAccountSettingDefault, ListAccountSettings, DeleteAccountSetting."""

import pytest

from helpers import ACCOUNT, expect_error

ROOT = f"arn:aws:iam::{ACCOUNT}:root"
ALL_NAMES = {
    "serviceLongArnFormat",
    "taskLongArnFormat",
    "containerInstanceLongArnFormat",
    "awsvpcTrunking",
    "containerInsights",
    "fargateFIPSMode",
    "tagResourceAuthorization",
    "fargateTaskRetirementWaitPeriod",
    "guardDutyActivate",
    "defaultLogDriverMode",
    "fargateEventWindows",
}


def settings(ecs, **kw):
    out = []
    for page in ecs.get_paginator("list_account_settings").paginate(**kw):
        out += page["settings"]
    return out


def effective(ecs, name):
    found = [s for s in settings(ecs, effectiveSettings=True, name=name)]
    assert len(found) == 1, found
    return found[0]


def test_put_list_delete(ecs):
    s = ecs.put_account_setting(name="awsvpcTrunking", value="enabled")["setting"]
    assert s["name"] == "awsvpcTrunking"
    assert s["value"] == "enabled"
    assert s["principalArn"] == ROOT
    listed = settings(ecs, name="awsvpcTrunking")
    assert [(x["name"], x["value"], x["principalArn"]) for x in listed] == [("awsvpcTrunking", "enabled", ROOT)]
    assert effective(ecs, "awsvpcTrunking")["value"] == "enabled"

    deleted = ecs.delete_account_setting(name="awsvpcTrunking")["setting"]
    assert deleted["name"] == "awsvpcTrunking"
    assert settings(ecs, name="awsvpcTrunking") == []
    assert effective(ecs, "awsvpcTrunking")["value"] == "disabled"


def test_effective_settings_cover_every_setting(ecs):
    eff = settings(ecs, effectiveSettings=True)
    names = [s["name"] for s in eff]
    assert len(names) == len(set(names))
    assert ALL_NAMES <= set(names)
    by_name = {s["name"]: s for s in eff}
    assert by_name["taskLongArnFormat"]["value"] == "enabled"
    assert by_name["fargateTaskRetirementWaitPeriod"]["value"] in ("0", "7", "14")


def test_without_effective_settings_only_explicit_ones(ecs):
    ecs.put_account_setting(name="containerInstanceLongArnFormat", value="disabled")
    try:
        own = settings(ecs)
        assert "containerInstanceLongArnFormat" in [s["name"] for s in own]
        assert len(own) < len(ALL_NAMES), "defaults are listed only with effectiveSettings"
    finally:
        ecs.delete_account_setting(name="containerInstanceLongArnFormat")


def test_put_default_changes_the_effective_value(ecs):
    s = ecs.put_account_setting_default(name="containerInsights", value="enhanced")["setting"]
    assert s["name"] == "containerInsights" and s["value"] == "enhanced"
    assert effective(ecs, "containerInsights")["value"] == "enhanced"
    # An explicit setting of the principal wins over the default.
    ecs.put_account_setting(name="containerInsights", value="disabled")
    try:
        assert effective(ecs, "containerInsights")["value"] == "disabled"
    finally:
        ecs.delete_account_setting(name="containerInsights")
    assert effective(ecs, "containerInsights")["value"] == "enhanced"
    ecs.put_account_setting_default(name="containerInsights", value="disabled")


def test_principal_arn(ecs):
    role = "arn:aws:iam::000000000000:role/deployer"
    s = ecs.put_account_setting(name="serviceLongArnFormat", value="disabled", principalArn=role)["setting"]
    assert s["principalArn"] == role
    assert [x["value"] for x in settings(ecs, name="serviceLongArnFormat", principalArn=role)] == ["disabled"]
    assert settings(ecs, name="serviceLongArnFormat") == [], "another principal's setting is not the caller's"
    ecs.delete_account_setting(name="serviceLongArnFormat", principalArn=role)
    assert settings(ecs, name="serviceLongArnFormat", principalArn=role) == []


def test_filter_by_value(ecs):
    ecs.put_account_setting(name="defaultLogDriverMode", value="blocking")
    try:
        got = settings(ecs, effectiveSettings=True, value="blocking")
        assert "defaultLogDriverMode" in [s["name"] for s in got]
        assert all(s["value"] == "blocking" for s in got)
    finally:
        ecs.delete_account_setting(name="defaultLogDriverMode")


def test_pagination(ecs):
    first = ecs.list_account_settings(effectiveSettings=True, maxResults=3)
    assert len(first["settings"]) == 3
    assert first.get("nextToken")
    all_names = [s["name"] for s in settings(ecs, effectiveSettings=True, PaginationConfig={"PageSize": 4})]
    assert len(all_names) == len(set(all_names)) >= len(ALL_NAMES)


@pytest.mark.parametrize(
    "name,value",
    [
        ("containerInsights", "sometimes"),
        ("taskLongArnFormat", "yes"),
        ("fargateTaskRetirementWaitPeriod", "3"),
        ("tagResourceAuthorization", "enabled"),
    ],
)
def test_invalid_value_refused(ecs, name, value):
    expect_error("InvalidParameterException", ecs.put_account_setting, name=name, value=value)
    expect_error("InvalidParameterException", ecs.put_account_setting_default, name=name, value=value)


def test_invalid_name_refused(ecs_nv):
    expect_error(
        ("InvalidParameterException", "SerializationException"), ecs_nv.put_account_setting, name="noSuchSetting", value="enabled"
    )


def test_invalid_principal_refused(ecs):
    expect_error(
        "InvalidParameterException", ecs.put_account_setting, name="awsvpcTrunking", value="enabled", principalArn="bob"
    )


def test_delete_unset_setting(ecs):
    expect_error(("InvalidParameterException", "ClientException"), ecs.delete_account_setting, name="fargateFIPSMode")


def test_guard_duty_activate_is_read_only(ecs):
    # ECS: "The guardDutyActivate parameter is read-only in Amazon ECS".
    expect_error(
        ("InvalidParameterException", "ClientException", "AccessDeniedException"),
        ecs.put_account_setting,
        name="guardDutyActivate",
        value="enabled",
    )
    assert settings(ecs, name="guardDutyActivate") == []
