//! tsuru's `application/x-json-stream` answers: one JSON object a line, `{"Message": ...}`
//! progress lines and, when the operation fails after the 200 was sent, a last line with
//! `Error`. The whole answer is read (the operation is over when it ends); an `Error` line is a
//! failed step carrying the server's text.

use crate::providers::ApiError;
use serde_json::Value;

/// The progress messages of a finished stream, or its `Error` line as an error.
pub fn read(method: &str, path: &str, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let mut messages = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // A line that is not JSON is console text (tsuru writes some): keep it as progress.
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            messages.push(String::from_utf8_lossy(line).trim().to_string());
            continue;
        };
        if let Some(e) = v.get("Error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            return Err(ApiError::other(method, path, format!("tsuru reports: {e}")));
        }
        if let Some(m) = v.get("Message").and_then(Value::as_str).map(str::trim).filter(|m| !m.is_empty()) {
            messages.push(m.to_string());
        }
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_line_after_progress_fails_with_the_servers_text() {
        let ok = b"{\"Message\":\"---- Setting 2 new environment variables ----\\n\",\"Timestamp\":\"t\"}\n\n{\"Message\":\" ---> done\\n\"}\n";
        assert_eq!(
            read("POST", "/1.0/apps/a/env", ok).unwrap(),
            ["---- Setting 2 new environment variables ----", "---> done"]
        );
        let failed = b"{\"Message\":\"---- Updating units ----\\n\"}\n{\"Message\":\"\",\"Error\":\"unit web-1 failed to start\"}\n";
        let e = read("PUT", "/1.0/apps/a/units", failed).unwrap_err();
        assert!(e.to_string().contains("unit web-1 failed to start"), "{e}");
        assert!(read("GET", "/x", b"").unwrap().is_empty());
    }
}
