//! HTTP through the `curl` command, so the workspace needs no HTTP client crate: JSON-RPC calls
//! (single or batched) and file downloads.

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json, value::RawValue};
use std::{
    ffi::OsString,
    io::{self, Write},
    path::Path,
    process::{Command, Output, Stdio},
};

/// Why a request failed; names the URL and, for JSON-RPC, the method.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{url}: {what}: cannot run curl ({source}); is it installed?")]
    NoCurl { url: String, what: String, source: io::Error },
    /// curl failed: no connection, or an HTTP error status.
    #[error("{url}: {what}: {message}")]
    Request { url: String, what: String, message: String },
    /// The JSON-RPC response holds an error, or is not what was asked for.
    #[error("{url}: {what}: {message}")]
    Response { url: String, what: String, message: String },
}

/// Runs `curl` with `args`, feeding it `stdin`; curl's own failure (no connection, HTTP error
/// status) becomes an error carrying its message and the start of the response body.
fn curl(
    program: &str,
    args: &[OsString],
    stdin: &[u8],
    url: &str,
    what: &str,
) -> Result<Vec<u8>, HttpError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| HttpError::NoCurl { url: url.into(), what: what.into(), source })?;
    // curl reads all of `--data-binary @-` before it sends or prints anything, so writing
    // first cannot deadlock; a write error (curl gave up early) shows in its exit status.
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let Output { status, stdout, stderr } = child.wait_with_output().map_err(|e| {
        HttpError::Request { url: url.into(), what: what.into(), message: e.to_string() }
    })?;
    if status.success() {
        return Ok(stdout);
    }
    let mut message = String::from_utf8_lossy(&stderr).trim().to_string();
    if message.is_empty() {
        message = format!("curl failed ({status})");
    }
    if !stdout.is_empty() {
        let body = String::from_utf8_lossy(&stdout);
        message = format!("{message}; response: {}", excerpt(&body));
    }
    Err(HttpError::Request { url: url.into(), what: what.into(), message })
}

/// The start of a long text, for error messages.
fn excerpt(text: &str) -> String {
    const MAX: usize = 300;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.trim().to_string(),
    }
}

/// Downloads `url` to `dest`, following redirects. The file appears only once complete: an
/// interrupted or failed download leaves `dest` as it was.
pub fn download(url: &str, dest: &Path) -> Result<(), HttpError> {
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    let args = ["-sS", "-L", "--fail", "-o"].map(OsString::from);
    let args = [&args[..], &[partial.clone(), url.into()]].concat();
    let what = format!("download to {}", dest.display());
    let result = curl("curl", &args, &[], url, &what).and_then(|_| {
        std::fs::rename(&partial, dest).map_err(|e| HttpError::Request {
            url: url.into(),
            what: what.clone(),
            message: e.to_string(),
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// A JSON-RPC endpoint over HTTP.
#[derive(Debug, Clone)]
pub struct RpcClient {
    url: String,
    program: String,
}

/// One JSON-RPC response; a `null` or absent `result` is `None`.
#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Value,
    result: Option<Box<RawValue>>,
    error: Option<Value>,
}

/// Requests per HTTP request in [`RpcClient::batch`]: well under the limits nodes and providers
/// put on batches.
const BATCH: usize = 100;

impl RpcClient {
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), program: "curl".into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs a JSON body and returns the response body.
    fn post(&self, body: &Value, what: &str) -> Result<Vec<u8>, HttpError> {
        let args = [
            "-sS",
            "--fail-with-body",
            "--connect-timeout",
            "30",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            // No `Expect: 100-continue` round trip for large bodies.
            "-H",
            "Expect:",
            "--data-binary",
            "@-",
            &self.url,
        ]
        .map(OsString::from);
        let body = serde_json::to_vec(body).expect("JSON values serialize");
        curl(&self.program, &args, &body, &self.url, what)
    }

    fn rpc_error(&self, what: &str, message: impl Into<String>) -> HttpError {
        HttpError::Response { url: self.url.clone(), what: what.into(), message: message.into() }
    }

    /// The `result` of a response, or its `error` as an error.
    fn result(&self, response: Response, what: &str) -> Result<Option<Box<RawValue>>, HttpError> {
        match response.error {
            Some(error) => {
                let message = error.get("message").and_then(Value::as_str).map_or_else(
                    || error.to_string(),
                    |m| format!("{m} (code {})", error.get("code").unwrap_or(&Value::Null)),
                );
                Err(self.rpc_error(what, format!("the node answered with an error: {message}")))
            }
            None => Ok(response.result),
        }
    }

    fn parse<T: DeserializeOwned>(&self, text: &[u8], what: &str) -> Result<T, HttpError> {
        serde_json::from_slice(text).map_err(|e| {
            let body = String::from_utf8_lossy(text);
            self.rpc_error(what, format!("unexpected response ({e}): {}", excerpt(&body)))
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        result: Option<&RawValue>,
        what: &str,
    ) -> Result<T, HttpError> {
        self.parse(result.map_or("null", RawValue::get).as_bytes(), what)
    }

    /// Calls `method`; its result as raw JSON text, exactly as the node wrote it (`None` when
    /// the node answered `null`).
    pub fn call_raw(
        &self,
        method: &str,
        params: &Value,
    ) -> Result<Option<Box<RawValue>>, HttpError> {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let text = self.post(&request, method)?;
        let response: Response = self.parse(&text, method)?;
        self.result(response, method)
    }

    /// Calls `method` and decodes its result.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: &Value) -> Result<T, HttpError> {
        let result = self.call_raw(method, params)?;
        self.decode(result.as_deref(), method)
    }

    /// Calls `method` once per entry of `params`, in batches; results in the order of `params`.
    pub fn batch<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &[Value],
    ) -> Result<Vec<T>, HttpError> {
        let mut results = Vec::with_capacity(params.len());
        for chunk in params.chunks(BATCH) {
            let requests: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(id, p)| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": p}))
                .collect();
            let text = self.post(&Value::Array(requests), method)?;
            // A node that rejects the whole batch answers with one error object.
            if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
                self.result(self.parse(&text, method)?, method)?;
                return Err(self.rpc_error(method, "expected an array of batch responses"));
            }
            let mut responses: Vec<Response> = self.parse(&text, method)?;
            if responses.len() != chunk.len() {
                let message = format!("{} responses to {} requests", responses.len(), chunk.len());
                return Err(self.rpc_error(method, message));
            }
            // Responses may come in any order.
            responses.sort_by_key(|r| r.id.as_u64());
            for (id, (response, p)) in responses.into_iter().zip(chunk).enumerate() {
                let what = format!("{method} {p}");
                if response.id.as_u64() != Some(id as u64) {
                    return Err(self.rpc_error(&what, format!("response id {}", response.id)));
                }
                let result = self.result(response, &what)?;
                results.push(self.decode(result.as_deref(), &what)?);
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_appear_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.txt");
        std::fs::write(&source, "payload").unwrap();
        let dest = dir.path().join("dest.txt");
        download(&format!("file://{}", source.display()), &dest).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "payload");

        let missing = format!("file://{}", dir.path().join("missing").display());
        let error = download(&missing, &dest).unwrap_err().to_string();
        assert!(error.contains(&missing), "{error}");
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "payload");
        assert!(!dir.path().join("dest.txt.partial").exists());
    }

    #[test]
    fn a_missing_curl_is_named() {
        let client =
            RpcClient { program: "curl-that-does-not-exist".into(), ..RpcClient::new("http://x") };
        let error = client.call::<Value>("eth_chainId", &json!([])).unwrap_err().to_string();
        assert!(error.contains("http://x") && error.contains("eth_chainId"), "{error}");
        assert!(error.contains("is it installed"), "{error}");
    }
}
