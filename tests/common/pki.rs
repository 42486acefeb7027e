//! Test certificates made with the openssl CLI.

use tonic::transport::Identity;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI;
/// plus a second CA and a client certificate it signed (the "wrong" client).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let sh = |script: &str| {
            super::run(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(script)
                    .current_dir(dir.path()),
            );
        };
        let ca = |name: &str| {
            format!("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={name} -keyout {name}.key -out {name}.pem 2>/dev/null")
        };
        let leaf = |name: &str, ca: &str, ext: &str| {
            format!(
                "openssl req -newkey rsa:2048 -nodes -subj /CN={name} -keyout {name}.key -out {name}.csr 2>/dev/null && \
                 printf '{ext}' > {name}.ext && \
                 openssl x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 -extfile {name}.ext -out {name}.pem 2>/dev/null"
            )
        };
        sh(&ca("ca"));
        sh(&ca("other-ca"));
        sh(&leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n",
        ));
        sh(&leaf("client", "ca", "extendedKeyUsage=clientAuth\\n"));
        sh(&leaf(
            "intruder",
            "other-ca",
            "extendedKeyUsage=clientAuth\\n",
        ));
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    pub fn identity(&self, name: &str) -> Identity {
        Identity::from_pem(
            self.read(&format!("{name}.pem")),
            self.read(&format!("{name}.key")),
        )
    }
}
