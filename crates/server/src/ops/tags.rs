//! Tags on any taggable ARN: TagResource, UntagResource, ListTagsForResource.

use super::task_definitions::{load_tags, save_tags};
use super::{Ctx, OpResult};
use berth_control::daemons;
use berth_model::arn::{Arn, Resource};
use berth_model::ecs::*;
use berth_model::{tags, EcsError, ErrorKind};
use berth_store::{docs, Expect, Tx};

fn not_found(arn: &str) -> EcsError {
    EcsError::new(
        ErrorKind::ResourceNotFound,
        format!("The specified resource is not found: {arn}"),
    )
}

/// Reads the tags of a resource, or its absence.
fn get(ctx: &Ctx, tx: &dyn Tx, arn_text: &str) -> OpResult<Vec<Tag>> {
    edit(ctx, tx, arn_text, None)
}

/// A change to a resource's tag list.
type TagChange<'a> = &'a dyn Fn(&mut Vec<Tag>) -> OpResult<()>;

/// Reads a resource's tags and, when `change` is given, writes them back changed.
fn edit(
    ctx: &Ctx,
    tx: &dyn Tx,
    arn_text: &str,
    change: Option<TagChange<'_>>,
) -> OpResult<Vec<Tag>> {
    let arn = Arn::parse(arn_text)?;
    if arn.region != ctx.arns.region || arn.account != ctx.arns.account {
        return Err(not_found(arn_text));
    }
    match arn.resource {
        Resource::Cluster { name } => {
            let Some(mut c) = tx
                .cluster(&name)?
                .filter(|c| c.value.status.as_deref() == Some("ACTIVE"))
            else {
                return Err(EcsError::cluster_not_found());
            };
            let mut t = c.value.tags.take().unwrap_or_default();
            if let Some(f) = change {
                f(&mut t)?;
                c.value.tags = Some(t.clone());
                tx.put_cluster(&c.value, Expect::Version(c.version))?;
            }
            Ok(t)
        }
        Resource::CapacityProvider { name } => {
            let Some(mut cp) = tx.capacity_provider(&name)? else {
                return Err(not_found(arn_text));
            };
            let mut t = cp.value.tags.take().unwrap_or_default();
            if let Some(f) = change {
                f(&mut t)?;
                berth_control::lifecycle::check_tags(&t)?;
                cp.value.tags = Some(t.clone());
                tx.put_capacity_provider(&cp.value, Expect::Version(cp.version))?;
            }
            Ok(t)
        }
        Resource::TaskDefinition { family, revision } => {
            if tx.task_definition(&family, Some(revision))?.is_none() {
                return Err(not_found(arn_text));
            }
            let mut t = load_tags(tx, arn_text)?;
            if let Some(f) = change {
                f(&mut t)?;
                save_tags(tx, arn_text, &t)?;
            }
            Ok(t)
        }
        Resource::Task { .. } => {
            let Some(mut task) = tx.task(arn_text)? else {
                return Err(not_found(arn_text));
            };
            let mut t = task.value.tags.take().unwrap_or_default();
            if let Some(f) = change {
                f(&mut t)?;
                task.value.tags = Some(t.clone());
                tx.put_task(&task.value, Expect::Version(task.version))?;
            }
            Ok(t)
        }
        Resource::ContainerInstance { cluster, .. } => {
            let Some(mut ci) = tx.container_instance(arn_text)? else {
                return Err(not_found(arn_text));
            };
            let mut t = ci.value.tags.take().unwrap_or_default();
            if let Some(f) = change {
                f(&mut t)?;
                ci.value.tags = Some(t.clone());
                tx.put_container_instance(
                    &ctx.arns.cluster(&cluster),
                    &ci.value,
                    Expect::Version(ci.version),
                )?;
            }
            Ok(t)
        }
        Resource::Service { .. } => {
            let Some(mut svc) = tx
                .service(arn_text)?
                .filter(|s| s.value.status.as_deref() != Some("INACTIVE"))
            else {
                return Err(not_found(arn_text));
            };
            let mut t = svc.value.tags.take().unwrap_or_default();
            if let Some(f) = change {
                f(&mut t)?;
                svc.value.tags = Some(t.clone());
                tx.put_service(&svc.value, Expect::Version(svc.version))?;
            }
            Ok(t)
        }
        Resource::Daemon { .. } => {
            let Some(mut d) = daemons::load_daemon(tx, arn_text)? else {
                return Err(not_found(arn_text));
            };
            if let Some(f) = change {
                f(&mut d.value.tags)?;
                docs::put(
                    tx,
                    daemons::DAEMON,
                    arn_text,
                    d.value.detail.cluster_arn.as_deref().unwrap_or(""),
                    &d.value,
                    Expect::Version(d.version),
                )?;
            }
            Ok(d.value.tags)
        }
        Resource::DaemonTaskDefinition { family, revision } => {
            let Some(mut d) = daemons::load_td(tx, arn_text)? else {
                return Err(not_found(arn_text));
            };
            if let Some(f) = change {
                f(&mut d.value.tags)?;
                docs::put(
                    tx,
                    daemons::DAEMON_TD,
                    &daemons::td_key(&family, revision),
                    &family,
                    &d.value,
                    Expect::Version(d.version),
                )?;
            }
            Ok(d.value.tags)
        }
    }
}

pub fn tag(ctx: &Ctx, req: TagResourceRequest) -> OpResult<TagResourceResponse> {
    let arn = req.resource_arn.clone().unwrap_or_default();
    let add = req.tags.clone().unwrap_or_default();
    tags::validate(&add)?;
    ctx.store.write(|tx| {
        edit(
            ctx,
            tx,
            &arn,
            Some(&|t: &mut Vec<Tag>| tags::merge(t, &add)),
        )?;
        Ok(TagResourceResponse {})
    })
}

pub fn untag(ctx: &Ctx, req: UntagResourceRequest) -> OpResult<UntagResourceResponse> {
    let arn = req.resource_arn.clone().unwrap_or_default();
    let keys = req.tag_keys.clone().unwrap_or_default();
    ctx.store.write(|tx| {
        edit(
            ctx,
            tx,
            &arn,
            Some(&|t: &mut Vec<Tag>| {
                t.retain(|x| !keys.iter().any(|k| Some(k) == x.key.as_ref()));
                Ok(())
            }),
        )?;
        Ok(UntagResourceResponse {})
    })
}

pub fn list(ctx: &Ctx, req: ListTagsForResourceRequest) -> OpResult<ListTagsForResourceResponse> {
    let arn = req.resource_arn.clone().unwrap_or_default();
    ctx.store.read(|tx| {
        Ok(ListTagsForResourceResponse {
            tags: Some(get(ctx, tx, &arn)?),
        })
    })
}
