//! A real PACS for tests: an Orthanc server on loopback with its own storage, free ports and AE
//! title "ORTHANC", plus a few REST helpers to look at what arrived.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const AET: &str = "ORTHANC";

pub struct Orthanc {
    dir: PathBuf,
    config: PathBuf,
    http_port: u16,
    dicom_port: u16,
    child: Option<Child>,
    /// `Authorization` value for the REST API when the configuration registers users.
    auth: Option<String>,
}

/// A port that was free a moment ago (bound on 127.0.0.1:0 and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary() -> String {
    std::env::var("INFERD_ORTHANC").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/Orthanc").exists() {
            "/usr/sbin/Orthanc".into()
        } else {
            "Orthanc".into()
        }
    })
}

impl Orthanc {
    /// Starts Orthanc with storage, index, configuration and log in `dir`, and waits until its REST
    /// API answers.
    pub fn start(dir: &Path) -> Orthanc {
        Self::start_with(dir, serde_json::json!({}))
    }

    /// Like [`Orthanc::start`], with `extra` configuration keys merged over the defaults.
    pub fn start_with(dir: &Path, extra: serde_json::Value) -> Orthanc {
        std::fs::create_dir_all(dir).unwrap();
        let (http_port, dicom_port) = (free_port(), free_port());
        let mut config = serde_json::json!({
            "Name": "inferd-test",
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("index"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
            "DicomAet": AET,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "DicomAlwaysAllowStore": true,
            "DicomAlwaysAllowEcho": true,
            "Plugins": [],
            "ConcurrentJobs": 1,
            "SaveJobs": false,
            "StorageCompression": false,
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        let path = dir.join("orthanc.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let auth = config["RegisteredUsers"].as_object().and_then(|users| {
            use base64::Engine;
            let (user, password) = users.iter().next()?;
            let pair = format!("{user}:{}", password.as_str()?);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        });
        let mut o = Orthanc {
            dir: dir.to_path_buf(),
            config: path,
            http_port,
            dicom_port,
            child: None,
            auth,
        };
        o.spawn();
        o
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("orthanc.log"))
            .unwrap();
        let child = Command::new(binary())
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start Orthanc ({}): {e}", binary()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.get("/system").is_some_and(|(code, _)| code == 200)
                && TcpStream::connect(("127.0.0.1", self.dicom_port)).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "Orthanc exited during start-up ({status}); see {}",
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Orthanc did not answer within 60 s; see {}",
            self.log_path().display()
        );
    }

    /// Kills the server (storage stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same storage and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn dicom_port(&self) -> u16 {
        self.dicom_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    pub fn dicom_addr(&self) -> String {
        format!("127.0.0.1:{}", self.dicom_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("orthanc.log")
    }

    /// A GET on the REST API: status code and body; `None` if the connection fails.
    pub fn get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        http(self.http_port, "GET", path, self.auth.as_deref())
    }

    /// A GET that must answer 200, parsed as JSON.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        match self.get(path) {
            Some((200, body)) => serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}")),
            other => panic!(
                "GET {path}: {:?}",
                other.map(|(c, b)| (c, String::from_utf8_lossy(&b).into_owned()))
            ),
        }
    }

    /// Orthanc identifiers of all stored instances.
    pub fn instances(&self) -> Vec<String> {
        serde_json::from_value(self.get_json("/instances")).unwrap()
    }

    /// The instance's tags as `{"Keyword": value}`.
    pub fn instance_tags(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/instances/{id}/simplified-tags"))
    }

    /// The instance's Part-10 file as Orthanc stored it.
    pub fn instance_file(&self, id: &str) -> Vec<u8> {
        match self.get(&format!("/instances/{id}/file")) {
            Some((200, body)) => body,
            other => panic!("GET file of {id}: {:?}", other.map(|(c, _)| c)),
        }
    }

    /// SOP Instance UIDs of all stored instances.
    pub fn sop_instance_uids(&self) -> Vec<String> {
        self.instances()
            .iter()
            .map(|id| {
                self.instance_tags(id)["SOPInstanceUID"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.1 client (Connection: close, Content-Length or chunked bodies).
fn http(port: u16, method: &str, path: &str, auth: Option<&str>) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let code = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((code, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
