//! Custom attributes: PutAttributes, DeleteAttributes, ListAttributes.

use super::container_instances::instance_arn;
use super::{active_cluster, decode_token, encode_token, page_size, Ctx, OpResult};
use berth_model::ecs::*;
use berth_model::{EcsError, ErrorKind};
use berth_store::{AttributeFilter, Tx};

/// At most this many custom attributes on one resource, as in ECS.
const MAX_ATTRIBUTES: i64 = 10;

fn check(a: &Attribute) -> OpResult<()> {
    let name = a.name.as_deref().unwrap_or("");
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_./@".contains(c);
    if name.is_empty() || name.len() > 128 || !name.chars().all(ok) {
        return Err(EcsError::invalid(format!(
            "Attribute name '{name}' is invalid: up to 128 letters, numbers, hyphens, underscores, periods, at signs and forward slashes."
        )));
    }
    if let Some(v) = &a.value {
        let ok = |c: char| c.is_ascii_alphanumeric() || "-_./@:() ".contains(c);
        if v.is_empty() || v.len() > 128 || !v.chars().all(ok) {
            return Err(EcsError::invalid(format!(
                "Attribute value '{v}' of '{name}' is invalid."
            )));
        }
    }
    Ok(())
}

/// Resolves each attribute's target to an existing container instance ARN.
fn resolve(
    ctx: &Ctx,
    tx: &dyn Tx,
    cluster: &Cluster,
    attrs: &[Attribute],
) -> OpResult<Vec<Attribute>> {
    let mut out = vec![];
    for a in attrs {
        check(a)?;
        let target = a.target_id.as_deref().unwrap_or("");
        if target.is_empty() {
            return Err(EcsError::invalid(format!(
                "Attribute '{}' needs a targetId (a container instance ID or ARN).",
                a.name.as_deref().unwrap_or("")
            )));
        }
        let arn = instance_arn(ctx, cluster, target);
        let in_cluster = arn.contains(&format!(
            ":container-instance/{}/",
            cluster.cluster_name.as_deref().unwrap_or("")
        ));
        if !in_cluster || tx.container_instance(&arn)?.is_none() {
            return Err(EcsError::new(
                ErrorKind::TargetNotFound,
                format!("Could not find the target {target} in the cluster."),
            ));
        }
        out.push(Attribute {
            target_id: Some(arn),
            target_type: Some(TargetType::ContainerInstance),
            ..a.clone()
        });
    }
    Ok(out)
}

pub fn put(ctx: &Ctx, req: PutAttributesRequest) -> OpResult<PutAttributesResponse> {
    let attrs = req.attributes.clone().unwrap_or_default();
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(EcsError::invalid(
            "PutAttributes takes between 1 and 10 attributes.",
        ));
    }
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let attrs = resolve(ctx, tx, &cluster, &attrs)?;
        for a in &attrs {
            tx.put_attribute(&cluster_arn, a)?;
            let target = a.target_id.as_deref().unwrap_or("");
            if tx.attribute_count(&cluster_arn, target)? > MAX_ATTRIBUTES {
                return Err(EcsError::new(
                    ErrorKind::AttributeLimitExceeded,
                    format!("A resource can have at most {MAX_ATTRIBUTES} custom attributes; {target} would have more."),
                ));
            }
        }
        Ok(PutAttributesResponse { attributes: Some(attrs) })
    })
}

pub fn delete(ctx: &Ctx, req: DeleteAttributesRequest) -> OpResult<DeleteAttributesResponse> {
    let attrs = req.attributes.clone().unwrap_or_default();
    if attrs.is_empty() || attrs.len() > 10 {
        return Err(EcsError::invalid(
            "DeleteAttributes takes between 1 and 10 attributes.",
        ));
    }
    ctx.store.write(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let cluster_arn = cluster.cluster_arn.clone().unwrap_or_default();
        let attrs = resolve(ctx, tx, &cluster, &attrs)?;
        for a in &attrs {
            tx.delete_attribute(
                &cluster_arn,
                a.target_id.as_deref().unwrap_or(""),
                a.name.as_deref().unwrap_or(""),
            )?;
        }
        Ok(DeleteAttributesResponse {
            attributes: Some(attrs),
        })
    })
}

pub fn list(ctx: &Ctx, req: ListAttributesRequest) -> OpResult<ListAttributesResponse> {
    let limit = page_size(req.max_results, 100, 100)?;
    if req.attribute_value.is_some() && req.attribute_name.is_none() {
        return Err(EcsError::invalid(
            "attributeValue can only be used together with attributeName.",
        ));
    }
    let after = decode_token(Operation::ListAttributes, req.next_token.as_deref())?;
    ctx.store.read(|tx| {
        let cluster = active_cluster(ctx, tx, req.cluster.as_deref())?.value;
        let filter = AttributeFilter {
            cluster_arn: cluster.cluster_arn.unwrap_or_default(),
            target_type: req.target_type.map(|t| t.as_str().to_string()),
            name: req.attribute_name.clone(),
            value: req.attribute_value.clone(),
        };
        let page = tx.attributes(&filter, after.as_deref(), limit)?;
        let next_token = page
            .next
            .as_deref()
            .map(|k| encode_token(Operation::ListAttributes, k));
        Ok(ListAttributesResponse {
            attributes: Some(page.items),
            next_token,
        })
    })
}
