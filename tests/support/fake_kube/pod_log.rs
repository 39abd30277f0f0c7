//! Which container a `pods/{name}/log` request reads, decided as the real API server decides it
//! before it asks the kubelet: kubernetes/kubernetes `pkg/registry/core/pod/strategy.go`
//! (`LogLocation`, v1.27–v1.36). No `container` is allowed only for a pod with exactly one
//! container; a named container must be one of the pod's containers or init containers; both
//! refusals are 400 BadRequest with these texts.

use serde_json::Value;

use super::store::ApiError;

/// The container to read, or the API server's refusal.
pub fn container_for_log(pod: &Value, name: &str, requested: &str) -> Result<String, ApiError> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    let init = names("initContainers");
    if requested.is_empty() {
        return match containers.len() {
            1 => Ok(containers[0].clone()),
            0 => Err(ApiError::new(
                400,
                "BadRequest",
                format!("a container name must be specified for pod {name}"),
            )),
            _ => {
                let mut message = format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    containers.join(" ")
                );
                if !init.is_empty() {
                    message.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                Err(ApiError::new(400, "BadRequest", message))
            }
        };
    }
    if containers.iter().chain(&init).any(|c| c == requested) {
        Ok(requested.to_string())
    } else {
        Err(ApiError::new(
            400,
            "BadRequest",
            format!("container {requested} is not valid for pod {name}"),
        ))
    }
}
