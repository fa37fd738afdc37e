//! Starts the real `vigil` binary on ephemeral loopback ports and talks to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `vigil` process; killed on drop if still running.
pub struct Vigil {
    child: Child,
    /// Where its HTTP listener is bound.
    pub addr: SocketAddr,
    /// Where its OTLP/HTTP listener is bound.
    pub otlp_http_addr: SocketAddr,
    /// Where its OTLP/gRPC listener is bound.
    pub otlp_grpc_addr: SocketAddr,
    /// Where its extra TLS listener (`--https-addr`) is bound, if it has one.
    pub https_addr: Option<SocketAddr>,
    /// The structured log lines it printed, as they arrive.
    logs: mpsc::Receiver<Value>,
    /// Fields of the "vigil is ready" event.
    pub ready_event: Value,
}

/// A `vigil` command line with JSON logs, before it starts.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil"));
    command.args(["--log-format", "json", "--log-level", "info"]).args(args);
    command.env_remove("VIGIL_DATA_DIR").env_remove("VIGIL_HTTP_ADDR").env_remove("VIGIL_CONFIG");
    // Parallel tests must not all take the default OTLP port.
    command.env("VIGIL_OTLP_HTTP_ADDR", "127.0.0.1:0").env("VIGIL_OTLP_GRPC_ADDR", "127.0.0.1:0");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

impl Vigil {
    /// `vigil server` on 127.0.0.1:0 (unless `args` says otherwise) with `data_dir`.
    pub fn server(data_dir: &Path, args: &[&str]) -> Vigil {
        let mut full = vec!["server", "--data-dir", data_dir.to_str().unwrap()];
        if !args.contains(&"--http-addr") {
            full.extend(["--http-addr", "127.0.0.1:0"]);
        }
        if !args.contains(&"--otlp-http-addr") {
            full.extend(["--otlp-http-addr", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        Vigil::start(command(&full))
    }

    /// `vigil agent` shipping to `server`'s OTLP/gRPC listener, its own listener on 127.0.0.1:0.
    pub fn agent(server: &Vigil, root: &Path, state_dir: &Path, args: &[&str]) -> Vigil {
        let endpoint = format!("http://{}", server.otlp_grpc_addr);
        let mut full = vec!["agent", "--server", &endpoint, "--root", root.to_str().unwrap()];
        full.extend(["--state-dir", state_dir.to_str().unwrap(), "--http-addr", "127.0.0.1:0"]);
        full.extend_from_slice(args);
        Vigil::start(command(&full))
    }

    /// Starts a prepared command and waits (at most 20 s) for its ready event.
    pub fn start(mut command: Command) -> Vigil {
        let mut child = command.spawn().expect("the vigil binary starts");
        let stdout = child.stdout.take().unwrap();
        let (sender, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if sender.send(event).is_err() {
                        return;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match logs.recv_timeout(left) {
                Ok(event) if event["message"] == "vigil is ready" || event["message"] == "vigil agent is ready" => {
                    let address =
                        |field: &str| event[field].as_str().map_or(([0, 0, 0, 0], 0).into(), |a| a.parse().unwrap());
                    let addr = address("http_addr");
                    let otlp_http_addr = address("otlp_http_addr");
                    let otlp_grpc_addr = address("otlp_grpc_addr");
                    let https_addr = event["https_addr"].as_str().map(|a| a.parse().unwrap());
                    return Vigil { child, addr, otlp_http_addr, otlp_grpc_addr, https_addr, logs, ready_event: event };
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let output = child.wait_with_output().unwrap();
                    panic!("vigil did not become ready in 20 s; stderr: {}", String::from_utf8_lossy(&output.stderr));
                }
            }
        }
    }

    /// `http://addr` (or https) followed by `path`.
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Plain-HTTP URL of `path`.
    pub fn http(&self, path: &str) -> String {
        self.url("http", path)
    }

    /// Sends a signal by name (`HUP`, `TERM`, ...) without waiting.
    #[allow(dead_code)]
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Sends SIGTERM and waits up to `limit` for the exit.
    pub fn terminate(mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("vigil did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL (no chance to flush) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Log events printed since the last call, waiting up to `wait` for one with `message`.
    pub fn wait_for_log(&self, message: &str, wait: Duration) -> Option<Value> {
        let deadline = Instant::now() + wait;
        while let Ok(event) = self.logs.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if event["message"] == message {
                return Some(event);
            }
        }
        None
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client that returns every status as a response, with a 10 s timeout.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Status and body of a GET.
pub fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// The `result` array of an instant PromQL query (`/api/v1/query`), asserting a 200 answer.
pub fn instant_query(vigil: &Vigil, expr: &str) -> Vec<Value> {
    let (status, body) = get(&client(), &vigil.http(&format!("/api/v1/query?query={}", url_encode(expr))), None);
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["data"]["result"].as_array().unwrap().clone()
}

/// A series for [`remote_write_body`]: label pairs and (ms, value) samples.
pub type WireSeries<'a> = (&'a [(&'a str, &'a str)], &'a [(i64, f64)]);

/// A snappy-compressed remote-write 1.0 body for the given series.
pub fn remote_write_body(series: &[WireSeries<'_>]) -> Vec<u8> {
    use prost::Message;
    use vigil_collector::remote_write::{Label, TimeSeries, WireSample, WriteRequest};
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels.iter().map(|(n, v)| Label { name: (*n).into(), value: (*v).into() }).collect(),
                samples: samples.iter().map(|(t, v)| WireSample { timestamp: *t, value: *v }).collect(),
            })
            .collect(),
        metadata: Vec::new(),
    };
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()).unwrap()
}

/// A server address usable from another thread.
pub struct Target {
    /// The HTTP listener.
    pub addr: SocketAddr,
}

impl Target {
    /// POSTs a remote-write body; the status, or `None` when the server is gone.
    pub fn write(&self, agent: &ureq::Agent, body: &[u8]) -> Option<u16> {
        let mut response = agent
            .post(format!("http://{}/api/v1/write", self.addr))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .send(body)
            .ok()?;
        let status = response.status().as_u16();
        response.body_mut().read_to_string().ok()?;
        Some(status)
    }
}

/// POSTs a remote-write body; returns status and response text.
pub fn remote_write(agent: &ureq::Agent, vigil: &Vigil, body: &[u8], token: Option<&str>) -> (u16, String) {
    let mut request = agent
        .post(vigil.http("/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.send(body).unwrap();
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().unwrap())
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, written as `cert.pem` and `key.pem` in `dir`.
pub fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, rcgen::CertifiedKey<rcgen::KeyPair>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified)
}

/// An HTTPS client trusting only `certificate`.
pub fn https_client(certificate: &rcgen::Certificate) -> ureq::Agent {
    let root = ureq::tls::Certificate::from_der(certificate.der()).to_owned();
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[root])).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Percent-encodes `text` for a query string (RFC 3986 unreserved characters stay).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A test peer's binary on `PATH`; panics naming the Debian package that `scripts/test.sh` installs.
pub fn peer_binary(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("`{name}` is needed (a Debian package): scripts/test.sh installs it"))
}

/// A test peer process (Prometheus, Alertmanager, node-exporter), killed on drop.
pub struct Peer(Child);

impl Peer {
    /// Starts `name` from `PATH` with `args`, its output discarded.
    pub fn start(name: &str, args: &[String]) -> Peer {
        let child = Command::new(peer_binary(name)).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        Peer(child.unwrap_or_else(|e| panic!("{name} does not start: {e}")))
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
