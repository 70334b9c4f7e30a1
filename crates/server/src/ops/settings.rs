//! Account settings: ListAccountSettings, PutAccountSetting,
//! PutAccountSettingDefault, DeleteAccountSetting.
//!
//! Settings are kept per principal ARN; account defaults under the principal
//! `default`. berth accepts and reports every setting of the model; those that
//! concern Fargate or AWS-only features change nothing else.

use super::{decode_token, encode_token, Ctx, OpResult, Principal};
use berth_model::ecs::*;
use berth_model::EcsError;

const DEFAULT_PRINCIPAL: &str = "default";

/// The value AWS uses when nobody set one.
fn aws_default(name: SettingName) -> &'static str {
    match name {
        SettingName::ServiceLongArnFormat
        | SettingName::TaskLongArnFormat
        | SettingName::ContainerInstanceLongArnFormat => "enabled",
        SettingName::AwsvpcTrunking
        | SettingName::ContainerInsights
        | SettingName::FargateFIPSMode
        | SettingName::GuardDutyActivate
        | SettingName::FargateEventWindows => "disabled",
        SettingName::TagResourceAuthorization => "on",
        SettingName::FargateTaskRetirementWaitPeriod => "7",
        SettingName::DefaultLogDriverMode => "non-blocking",
    }
}

fn check_value(name: SettingName, value: &str) -> OpResult<()> {
    if name == SettingName::GuardDutyActivate {
        return Err(EcsError::invalid(
            "guardDutyActivate is read-only: it reflects GuardDuty Runtime Monitoring and cannot be set through ECS.",
        ));
    }
    let allowed: &[&str] = match name {
        SettingName::ServiceLongArnFormat
        | SettingName::TaskLongArnFormat
        | SettingName::ContainerInstanceLongArnFormat
        | SettingName::AwsvpcTrunking
        | SettingName::FargateFIPSMode
        | SettingName::GuardDutyActivate
        | SettingName::FargateEventWindows => &["enabled", "disabled"],
        SettingName::ContainerInsights => &["enabled", "disabled", "enhanced"],
        SettingName::TagResourceAuthorization => &["on", "off"],
        SettingName::FargateTaskRetirementWaitPeriod => &["0", "7", "14"],
        SettingName::DefaultLogDriverMode => &["blocking", "non-blocking"],
    };
    if !allowed.contains(&value) {
        return Err(EcsError::invalid(format!(
            "The value '{value}' is not valid for {name}. Valid values: {}.",
            allowed.join(", ")
        )));
    }
    Ok(())
}

fn root_arn(ctx: &Ctx) -> String {
    format!("arn:aws:iam::{}:root", ctx.arns.account)
}

/// The principal a request acts for: the given ARN, or the caller's.
fn principal_arn(ctx: &Ctx, _caller: &Principal, given: Option<&str>) -> OpResult<String> {
    match given {
        Some(p) if p.starts_with("arn:aws:iam::") => Ok(p.to_string()),
        Some(p) => Err(EcsError::invalid(format!(
            "'{p}' is not an IAM user, role or root ARN."
        ))),
        None => Ok(root_arn(ctx)),
    }
}

pub fn put(
    ctx: &Ctx,
    caller: &Principal,
    req: PutAccountSettingRequest,
) -> OpResult<PutAccountSettingResponse> {
    let name = req
        .name
        .ok_or_else(|| EcsError::invalid("name is required."))?;
    let value = req.value.clone().unwrap_or_default();
    check_value(name, &value)?;
    let principal = principal_arn(ctx, caller, req.principal_arn.as_deref())?;
    let setting = Setting {
        name: Some(name),
        value: Some(value),
        principal_arn: Some(principal),
        r#type: Some(SettingType::User),
    };
    ctx.store.write(|tx| {
        tx.put_setting(&setting)?;
        Ok(PutAccountSettingResponse {
            setting: Some(setting.clone()),
        })
    })
}

pub fn put_default(
    ctx: &Ctx,
    req: PutAccountSettingDefaultRequest,
) -> OpResult<PutAccountSettingDefaultResponse> {
    let name = req
        .name
        .ok_or_else(|| EcsError::invalid("name is required."))?;
    let value = req.value.clone().unwrap_or_default();
    check_value(name, &value)?;
    let stored = Setting {
        name: Some(name),
        value: Some(value.clone()),
        principal_arn: Some(DEFAULT_PRINCIPAL.into()),
        r#type: Some(SettingType::User),
    };
    ctx.store.write(|tx| {
        tx.put_setting(&stored)?;
        Ok(PutAccountSettingDefaultResponse {
            setting: Some(Setting {
                principal_arn: Some(root_arn(ctx)),
                ..stored.clone()
            }),
        })
    })
}

pub fn delete(
    ctx: &Ctx,
    caller: &Principal,
    req: DeleteAccountSettingRequest,
) -> OpResult<DeleteAccountSettingResponse> {
    let name = req
        .name
        .ok_or_else(|| EcsError::invalid("name is required."))?;
    let principal = principal_arn(ctx, caller, req.principal_arn.as_deref())?;
    ctx.store.write(|tx| {
        let current = tx
            .settings(&principal)?
            .into_iter()
            .find(|s| s.name == Some(name));
        let Some(setting) = current else {
            return Err(EcsError::invalid(format!(
                "The setting {name} is not set for {principal}."
            )));
        };
        tx.delete_setting(&principal, name.as_str())?;
        Ok(DeleteAccountSettingResponse {
            setting: Some(setting),
        })
    })
}

pub fn list(
    ctx: &Ctx,
    caller: &Principal,
    req: ListAccountSettingsRequest,
) -> OpResult<ListAccountSettingsResponse> {
    let limit = match req.max_results {
        0 => 10,
        n if (1..=10).contains(&n) => n as usize,
        n => {
            return Err(EcsError::invalid(format!(
                "maxResults must be between 1 and 10; {n} was given."
            )))
        }
    };
    let principal = principal_arn(ctx, caller, req.principal_arn.as_deref())?;
    let after = decode_token(Operation::ListAccountSettings, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let own = tx.settings(&principal)?;
        let mut all: Vec<Setting> = if req.effective_settings {
            let defaults = tx.settings(DEFAULT_PRINCIPAL)?;
            SettingName::ALL
                .iter()
                .map(|n| {
                    own.iter()
                        .find(|s| s.name == Some(*n))
                        .cloned()
                        .or_else(|| {
                            defaults
                                .iter()
                                .find(|s| s.name == Some(*n))
                                .map(|s| Setting {
                                    principal_arn: Some(root_arn(ctx)),
                                    ..s.clone()
                                })
                        })
                        .unwrap_or_else(|| Setting {
                            name: Some(*n),
                            value: Some(aws_default(*n).to_string()),
                            principal_arn: Some(root_arn(ctx)),
                            r#type: Some(SettingType::AwsManaged),
                        })
                })
                .collect()
        } else {
            own
        };
        all.retain(|s| req.name.is_none_or(|n| s.name == Some(n)));
        all.retain(|s| {
            req.value
                .as_ref()
                .is_none_or(|v| s.value.as_ref() == Some(v))
        });
        all.sort_by_key(|s| s.name.map(|n| n.as_str()).unwrap_or(""));
        let start = match &after {
            Some(k) => all
                .iter()
                .position(|s| s.name.map(|n| n.as_str()) == Some(k.as_str()))
                .map_or(all.len(), |p| p + 1),
            None => 0,
        };
        let page: Vec<Setting> = all.iter().skip(start).take(limit).cloned().collect();
        let next_token = if start + page.len() < all.len() {
            page.last()
                .and_then(|s| s.name)
                .map(|n| encode_token(Operation::ListAccountSettings, n.as_str()))
        } else {
            None
        };
        Ok(ListAccountSettingsResponse {
            settings: Some(page),
            next_token,
        })
    })
}
