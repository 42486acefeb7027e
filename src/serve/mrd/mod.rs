//! The MRD streaming server: scanner-side reconstruction clients (OpenRecon / FIRE, Gadgetron
//! clients, `python-ismrmrd-server`'s `client.py`) stream a scan's raw acquisitions over TCP and get
//! images back while the scan continues, on the same scheduler, admission and models as gRPC.
//!
//! A session (one TCP connection):
//! 1. **CONFIG_FILE** names the pipeline: `inferd` or `default` (the default reconstruction model,
//!    `recon-radial` for non-Cartesian data when it is loaded), `inferd-radial`, or any served
//!    reconstruction model's name. **CONFIG_TEXT** (optional) carries JSON parameters, flat or
//!    OpenRecon's `{"parameters": {...}}`; see [`params::PARAMETERS`]. A config is optional;
//!    without one the session uses `inferd` with defaults (uint16 magnitude images).
//! 2. **HEADER**: the MRD XML header (matrix, field of view, encoding limits, trajectory).
//! 3. **ACQUISITION**s are sorted into slices by [`crate::io::mrd::Assembler`], the MRD file
//!    reader's code: noise scans pre-whiten, calibration lines count, navigators and dummy scans are
//!    skipped, partial Fourier and readout oversampling as in files. A slice is reconstructed as soon
//!    as its acquisition flagged `ACQ_LAST_IN_SLICE` arrives; slices still open at CLOSE are
//!    reconstructed then. WAVEFORM and TEXT messages are read and ignored.
//! 4. **IMAGE**s go back as each slice finishes: one series per output (magnitude `image_series_index`
//!    1, complex 2, zero-filled 3), `image_index` counting each series' images from 1, geometry and
//!    counters from the slice's acquisitions, meta attributes for the DICOM conversion.
//! 5. **CLOSE** from the client: the server finishes every slice, sends CLOSE and closes.
//!
//! Anything the server cannot accept (an unknown pipeline or parameter, a header it cannot use,
//! acquisitions that do not fit the header, declared sizes over the limits, an unknown message id,
//! a reconstruction refused by admission) ends the session with a TEXT message starting `ERR` that
//! says what is accepted, then CLOSE. A client that disconnects or stalls mid-scan (longer than
//! the stream idle timeout) ends its session; its queued slices are dropped and its memory
//! released. Nothing of a session can stop the server.

pub mod params;
pub mod protocol;

pub use params::{Params, PixelType};

use super::budget::Reservation;
use super::clients::Caller;
use super::state::ServerState;
use crate::api::dicom::DicomPlan;
use crate::api::pb;
use crate::api::{tensor, validate};
use crate::error::Error;
use crate::io::acquisition::centre_crop;
use crate::io::mrd::{self, AssembledSlice, Assembler, MrdHeader, Pushed, SliceData};
use crate::metrics::RequestGuard;
use crate::models::{Family, Input, Output, DEFAULT_RADIAL_MODEL};
use crate::pacs::dicom::{Provenance, Series};
use crate::sched::{JobOptions, ModelHandle};
use protocol::{ImageHead, Message, Pixels, WireError, WireLimits};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Slices of one session that may be incomplete at once (interleaved multi-slice acquisitions
/// keep one per slice; each holds a slice's k-space).
pub const MAX_OPEN_SLICES: usize = 64;
/// Longest CONFIG_TEXT, HEADER or TEXT.
const MAX_TEXT: usize = 4 << 20;
/// Largest ACQUISITION or WAVEFORM body (one readout line of every coil: 65535 samples × 128 coils).
const MAX_ACQUISITION_BYTES: usize = 64 << 20;

/// Image series of a session's outputs.
const SERIES_MAGNITUDE: u16 = 1;
const SERIES_COMPLEX: u16 = 2;
const SERIES_ZERO_FILLED: u16 = 3;

/// TLS for the MRD port from the server's certificate settings (`--tls-cert`, `--tls-key`; with
/// `--tls-client-ca` clients must present a certificate signed by it), or `None` without them.
pub fn tls_acceptor(
    config: &super::ServeConfig,
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::{self, server::WebPkiClientVerifier, RootCertStore};
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let context = |p: &std::path::Path| format!("cannot read {}", p.display());
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", context(cert)))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", context(key)))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &config.tls_client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("{}: {e}", context(ca)))?
            {
                roots.add(c.map_err(|e| anyhow::anyhow!("{}: {e}", context(ca)))?)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let tls = builder.with_single_cert(certs, key)?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls))))
}

/// Accepts MRD connections until the server drains, then waits for the sessions in progress to
/// finish (the caller bounds that wait by the shutdown grace period); with `tls`, each connection
/// completes its handshake within `handshake` or is dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    mut drain: watch::Receiver<bool>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake: std::time::Duration,
) {
    let mut next_id = 0u64;
    let mut sessions = JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    next_id += 1;
                    let _ = stream.set_nodelay(true);
                    let (state, tls, id) = (state.clone(), tls.clone(), next_id);
                    sessions.spawn(async move {
                        let Some(acceptor) = tls else {
                            return session(state, stream, Caller::peer(peer, None), id).await;
                        };
                        match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => {
                                let cert = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                                let caller = Caller::peer(peer, cert.map(|c| c.as_ref()));
                                session(state, s, caller, id).await
                            }
                            Ok(Err(e)) => tracing::info!(session = id, error = %e, "MRD TLS handshake failed"),
                            Err(_) => tracing::info!(session = id, "MRD TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MRD accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = async { let _ = drain.wait_for(|d| *d).await; } => break,
        }
    }
    drop(listener);
    if !sessions.is_empty() {
        tracing::info!(
            sessions = sessions.len(),
            "draining: waiting for MRD sessions to finish"
        );
    }
    while sessions.join_next().await.is_some() {}
}

/// How a session ended, for the logs and the request metrics.
enum End {
    /// Both sides closed in order.
    Closed,
    /// ERR went back (the message), then CLOSE.
    Refused(String),
    /// The client went away or stalled.
    Gone(String),
}

struct Session {
    state: Arc<ServerState>,
    caller: Caller,
    id: u64,
    pipeline: String,
    params: Params,
    asm: Option<Assembler>,
    model: Option<(ModelHandle, usize, String)>,
    /// Memory of the incomplete slices: the most that were open at once (grown as slices open).
    partial: Option<Reservation>,
    inflight: JoinSet<Result<(), Error>>,
    permits: Arc<Semaphore>,
    out: mpsc::Sender<Vec<u8>>,
    /// Slices submitted so far (the next one's image index is this + 1).
    slices: u32,
    /// The uint16 scale of the session's images, once the first image has set it.
    scale: Arc<std::sync::OnceLock<f32>>,
    /// The DICOM series the magnitude images are stored in the PACS as (`pacs` parameter).
    series: Option<Arc<Series>>,
    /// `mrd_session`: the parent of the slices' spans (continuing the `traceparent` parameter's
    /// trace when given).
    span: tracing::Span,
}

async fn session<S>(state: Arc<ServerState>, stream: S, caller: Caller, id: u64)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::with_capacity(1 << 16, rd);
    let (out, mut rx) = mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(buf) = rx.recv().await {
            if wr.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut s = Session {
        caller,
        permits: Arc::new(Semaphore::new(state.stream_inflight.max(1))),
        state,
        id,
        pipeline: "inferd".into(),
        params: Params::default(),
        asm: None,
        model: None,
        partial: None,
        inflight: JoinSet::new(),
        out,
        slices: 0,
        scale: Arc::default(),
        series: None,
        span: tracing::info_span!("mrd_session", session = id, otel.kind = "server"),
    };
    tracing::info!(session = id, "MRD session started");
    let end = s.run(&mut rd).await;
    let guard = match &s.model {
        Some((m, ..)) => RequestGuard::new(&s.state.metrics, m.info(), "mrd"),
        None => RequestGuard::for_name(&s.state.metrics, "", "", "mrd"),
    };
    match &end {
        End::Closed => {
            let _ = s.out.send(protocol::close_message()).await;
            let _ = guard.finish(Ok(()));
            tracing::info!(session = id, slices = s.slices, "MRD session finished");
        }
        End::Refused(m) => {
            let _ = s
                .out
                .send(protocol::text_message(&format!("ERR {m}")))
                .await;
            let _ = s.out.send(protocol::close_message()).await;
            let _ = guard.finish::<()>(Err(tonic::Status::invalid_argument(m.clone())));
            tracing::warn!(session = id, reason = %m, "MRD session refused");
        }
        End::Gone(m) => {
            s.inflight.abort_all();
            let _ = guard.finish::<()>(Err(tonic::Status::cancelled(m.clone())));
            tracing::info!(session = id, reason = %m, "MRD client went away");
        }
    }
    drop(s);
    let _ = writer.await;
    if let End::Refused(_) = end {
        // Read (and drop) what the client still sends for a moment: closing a socket with unread
        // data resets the connection, and the reset can overtake the ERR on its way to the client.
        let (mut rest, mut sink) = (rd.take(MAX_ACQUISITION_BYTES as u64), tokio::io::sink());
        let drain = tokio::io::copy(&mut rest, &mut sink);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
    }
}

impl Session {
    fn limits(&self) -> WireLimits {
        WireLimits {
            max_text: MAX_TEXT,
            max_body: MAX_ACQUISITION_BYTES,
            idle: self.state.stream_idle,
        }
    }

    async fn run<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> End {
        let limits = self.limits();
        loop {
            let msg = match protocol::read_message(rd, &limits).await {
                Ok(m) => m,
                Err(WireError::Gone(m)) => return End::Gone(m),
                Err(WireError::Invalid(m)) => return End::Refused(m),
            };
            let step = match msg {
                Message::ConfigFile(name) => self.config_file(name),
                Message::ConfigText(text) => self.config_text(&text),
                Message::Header(xml) => self.header(&xml),
                Message::Acquisition {
                    head,
                    trajectory,
                    data,
                } => self.acquisition(head, trajectory, data).await,
                Message::Text(_) | Message::Waveform => Ok(()),
                Message::Image => Err("IMAGE messages are not accepted: inferd reconstructs raw \
                                       acquisitions (send ACQUISITION messages)"
                    .into()),
                Message::Close => {
                    let open: Vec<_> = match &self.asm {
                        Some(a) => a.open_slices().collect(),
                        None => Vec::new(),
                    };
                    for key in open {
                        if let Err(e) = self.submit(key).await {
                            return End::Refused(e);
                        }
                    }
                    while let Some(r) = self.inflight.join_next().await {
                        if let Err(e) = flatten(r) {
                            return End::Refused(e);
                        }
                    }
                    return End::Closed;
                }
            };
            if let Err(e) = step {
                return End::Refused(e);
            }
            while let Some(r) = self.inflight.try_join_next() {
                if let Err(e) = flatten(r) {
                    return End::Refused(e);
                }
            }
        }
    }

    fn config_file(&mut self, name: String) -> Result<(), String> {
        let loaded = self.state.loaded().map_err(|e| e.to_string())?;
        let recon = |n: &str| loaded.find_family(n, Family::Recon).is_ok();
        if !(matches!(name.as_str(), "inferd" | "default" | "inferd-radial") || recon(&name)) {
            let names: Vec<_> = loaded.names().into_iter().filter(|n| recon(n)).collect();
            return Err(format!(
                "unknown config {name:?}; accepted: inferd, inferd-radial or a reconstruction \
                 model: {}",
                names.join(", ")
            ));
        }
        self.pipeline = name;
        Ok(())
    }

    fn config_text(&mut self, text: &str) -> Result<(), String> {
        let p = Params::parse(text)?;
        if let Some(t) = &p.traceparent {
            crate::telemetry::parent_from_traceparent(&self.span, t);
        }
        if let Some(c) = &p.config {
            self.config_file(c.clone())?;
        }
        self.params = p;
        Ok(())
    }

    fn header(&mut self, xml: &str) -> Result<(), String> {
        if self.asm.is_some() {
            return Err("HEADER sent twice; send it once, before the acquisitions".into());
        }
        let hdr = mrd::parse_header(xml).map_err(|e| format!("HEADER: {e:#}"))?;
        let asm = Assembler::new(hdr, MAX_OPEN_SLICES).map_err(|e| format!("HEADER: {e:#}"))?;
        let (ny, nx) = asm.image_size();
        let l = &self.state.limits;
        let encoded = asm.header().encoded_matrix[0];
        if asm.is_cartesian() && encoded > 4 * l.max_size {
            return Err(format!(
                "HEADER: the encoded readout has {encoded} samples; expected at most {}",
                4 * l.max_size
            ));
        }
        for (what, v) in [("rows", ny), ("columns", nx)] {
            if v < l.min_size || v > l.max_size {
                return Err(format!(
                    "HEADER: the reconstructed image has {v} {what}; expected {} to {}",
                    l.min_size, l.max_size
                ));
            }
        }
        let loaded = self.state.loaded().map_err(|e| e.to_string())?;
        let name = match self.pipeline.as_str() {
            "inferd-radial" => DEFAULT_RADIAL_MODEL,
            "inferd" | "default"
                if !asm.is_cartesian() && loaded.find(DEFAULT_RADIAL_MODEL).is_ok() =>
            {
                DEFAULT_RADIAL_MODEL
            }
            "inferd" | "default" => "",
            other => other,
        };
        let model = loaded
            .find_family(name, Family::Recon)
            .map_err(|e| e.to_string())?;
        let info = model.info();
        let (width, name) = (validate::network_width(info), info.name.clone());
        if self.params.pacs {
            self.series = Some(self.pacs_series(asm.header(), &name, asm.is_cartesian())?);
        }
        self.model = Some((model, width, name));
        self.asm = Some(asm);
        Ok(())
    }

    /// The DICOM series of the session's magnitude images in the PACS: patient, study and
    /// acquisition attributes from the MRD header, one series per session.
    fn pacs_series(
        &self,
        hdr: &MrdHeader,
        model: &str,
        cartesian: bool,
    ) -> Result<Arc<Series>, String> {
        let dicom = &self.state.dicom;
        if !dicom.has_pacs() {
            return Err(
                "pacs asks for PACS delivery, but this server has no PACS configured \
                        (--pacs HOST:PORT or --pacs-stow-url URL)"
                    .into(),
            );
        }
        let mut info = hdr.info.clone();
        if let Some(d) = &self.params.series_description {
            info.series_description = Some(d.clone());
        }
        let provenance = Provenance {
            model: model.to_string(),
            acceleration: None,
            sampling: if cartesian { "Cartesian" } else { "radial" }.into(),
            data_consistency: String::new(),
        };
        Series::new(info, &dicom.uid_root, 1, &provenance, 1)
            .map(Arc::new)
            .map_err(|e| format!("HEADER: cannot describe the images as DICOM: {e:#}"))
    }

    async fn acquisition(
        &mut self,
        head: mrd::AcqHead,
        trajectory: Vec<f32>,
        data: Vec<num_complex::Complex32>,
    ) -> Result<(), String> {
        let Some(asm) = self.asm.as_mut() else {
            return Err("ACQUISITION before HEADER; send the MRD XML header first".into());
        };
        let max_coils = self.state.limits.max_coils;
        if head.channels > max_coils {
            return Err(format!(
                "the acquisition has {} channels; at most {max_coils} are accepted",
                head.channels
            ));
        }
        if asm.opens_slice(&head) {
            // the incomplete slices' memory, admitted before the new one is allocated
            let open = asm.open_count() as u64 + 1;
            let bytes = asm
                .partial_bytes(head.channels)
                .and_then(|b| b.checked_mul(open));
            let what = format!(
                "{open} incomplete slices of {} coils at {:?}",
                head.channels,
                asm.image_size()
            );
            let session = self.span.clone();
            session
                .in_scope(|| match &mut self.partial {
                    Some(r) => r.grow_to(&what, bytes),
                    None => self
                        .state
                        .budget
                        .admit(&what, bytes)
                        .map(|r| self.partial = Some(r)),
                })
                .map_err(|e| e.to_string())?;
        }
        let pushed = asm
            .push(&head, data, &trajectory)
            .map_err(|e| format!("ACQUISITION (scan counter {}): {e:#}", head_counter(&head)))?;
        if let Pushed::Added(key, true) = pushed {
            self.submit(key).await?;
        }
        Ok(())
    }

    /// Takes a slice out of the assembler and reconstructs it on the scheduler (waits while the
    /// session has `stream_inflight` slices in flight).
    async fn submit(&mut self, key: mrd::SliceKey) -> Result<(), String> {
        let (asm, Some((model, width, name))) = (self.asm.as_mut(), self.model.clone()) else {
            return Ok(());
        };
        let Some(asm) = asm else { return Ok(()) };
        let Some(slice) = asm.take(key) else {
            return Ok(());
        };
        let hdr = Arc::new(asm.header().clone());
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the session is closing".to_string())?;
        self.slices = self.slices.saturating_add(1);
        let job = SliceJob {
            state: self.state.clone(),
            options: self
                .state
                .clients
                .job_options(&self.caller, crate::sched::Priority::Normal, None)
                .map_err(|e| e.to_string())?,
            model,
            width,
            model_name: name,
            params: self.params.clone(),
            hdr,
            index: self.slices,
            request_id: format!("mrd-{}-{}", self.id, self.slices),
            out: self.out.clone(),
            scale: self.scale.clone(),
            series: self.series.clone(),
        };
        let span = tracing::info_span!(parent: &self.span, "mrd_slice", index = self.slices as i64);
        self.inflight.spawn(
            async move {
                let _permit = permit;
                job.run(slice).await
            }
            .instrument(span),
        );
        Ok(())
    }
}

fn head_counter(a: &mrd::AcqHead) -> String {
    format!("line {} slice {}", a.e1, a.slice)
}

fn flatten(r: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), String> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("a reconstruction task failed: {e}")),
    }
}

/// One slice's reconstruction and the images it sends back.
struct SliceJob {
    state: Arc<ServerState>,
    options: JobOptions,
    model: ModelHandle,
    width: usize,
    model_name: String,
    params: Params,
    hdr: Arc<MrdHeader>,
    /// 1-based position of the slice in the session.
    index: u32,
    request_id: String,
    out: mpsc::Sender<Vec<u8>>,
    scale: Arc<std::sync::OnceLock<f32>>,
    series: Option<Arc<Series>>,
}

impl SliceJob {
    async fn run(self, slice: AssembledSlice) -> Result<(), Error> {
        let (ny, nx, coils) = (slice.ny, slice.nx, slice.coils);
        let (sampling, kspace, fraction) = match &slice.data {
            SliceData::Cartesian { data, lines } => {
                let mut mask = vec![0f32; ny * nx];
                for (row, _) in lines.iter().enumerate().filter(|(_, &m)| m) {
                    mask[row * nx..(row + 1) * nx].fill(1.0);
                }
                let measured = lines.iter().filter(|&&m| m).count() as f32 / ny as f32;
                (
                    pb::sampling::Kind::Mask(tensor::encode_f32(&[ny, nx], &mask)),
                    tensor::encode_c64(&[coils, ny, nx], data),
                    measured,
                )
            }
            SliceData::NonCartesian { data, trajectory } => {
                let flat: Vec<f32> = trajectory.iter().flatten().copied().collect();
                let samples = trajectory.len();
                (
                    pb::sampling::Kind::Trajectory(tensor::encode_f32(&[samples, 2], &flat)),
                    tensor::encode_c64(&[coils, samples], data),
                    samples as f32 / (ny * nx) as f32,
                )
            }
        };
        let header = pb::ReconHeader {
            height: ny as u32,
            width: nx as u32,
            coils: coils as u32,
            slices: 1,
            sampling: Some(pb::Sampling {
                kind: Some(sampling),
            }),
            data_consistency: self.params.dc.clone(),
            return_complex: self.params.complex,
            return_zero_filled: self.params.zero_filled,
            request_id: self.request_id.clone(),
            ..Default::default()
        };
        let state = &self.state;
        let plan = validate::plan(&header, self.width, &state.limits)?;
        let _reservation = state.budget.reserve(
            &format!("one MRD slice of {coils} coils at {ny}x{nx}"),
            plan.slice_bytes,
        )?;
        let plan = state.with_operator(plan).await?;
        let input = validate::slice(
            &plan,
            &pb::KSpaceSlice {
                index: 0,
                kspace: Some(kspace),
                mask: None,
            },
            0,
        )?;
        let loaded = state.loaded()?;
        let mut rx = loaded.scheduler.submit(
            &self.model,
            vec![Input::Recon {
                slice: input,
                dc: plan.dc,
            }],
            self.options.clone(),
        )?;
        let done = match rx.remove(0).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Unavailable(
                    "the device worker dropped the slice".into(),
                ))
            }
        };
        let Output::Recon(o) = done.output else {
            return Err(Error::Internal(
                "a reconstruction model answered with something else".into(),
            ));
        };
        if let Some(series) = &self.series {
            self.store(series.clone(), &slice, o.magnitude.clone())
                .await?;
        }
        for msg in self.images(&slice, &o, fraction) {
            if self.out.send(msg).await.is_err() {
                return Err(Error::Cancelled("the client left".into()));
            }
        }
        Ok(())
    }

    /// Rows of the images sent back: the reconstruction matrix's when phase encoding is
    /// oversampled.
    fn rows(&self, s: &AssembledSlice) -> usize {
        match self.hdr.recon_matrix[1] {
            r if r > 0 && r < s.ny => r,
            _ => s.ny,
        }
    }

    /// Stores the magnitude image in the PACS outbox (answered once it is on disk).
    async fn store(
        &self,
        series: Arc<Series>,
        s: &AssembledSlice,
        magnitude: Vec<f32>,
    ) -> Result<(), Error> {
        let rows = self.rows(s);
        let fov = [self.hdr.recon_fov[0], self.hdr.recon_fov[1]];
        let a = &s.first;
        let plane = mrd::plane(a.position, a.read_dir, a.phase_dir, fov, rows, s.nx);
        let plan = DicomPlan {
            return_dicom: false,
            store: true,
            info: Default::default(),
            series_number: series.series_number,
            crop: Some([rows, s.nx]),
        };
        self.state
            .dicom
            .emit(
                series,
                &plan,
                self.index.saturating_sub(1) as usize,
                magnitude,
                s.ny,
                s.nx,
                plane,
            )
            .await
            .map(|_| ())
    }

    /// The slice's IMAGE messages (magnitude, then complex and zero-filled when asked for).
    fn images(
        &self,
        s: &AssembledSlice,
        o: &crate::mri::recon::SliceOutput,
        fraction: f32,
    ) -> Vec<Vec<u8>> {
        let h = &self.hdr;
        let rows = self.rows(s);
        let cols = s.nx;
        let crop = |img: &[f32]| centre_crop(img, s.ny, s.nx, rows, cols);
        let f3 = |v: [f64; 3]| v.map(|x| x as f32);
        let a = &s.first;
        let head = |series: u16| ImageHead {
            measurement_uid: a.measurement_uid,
            matrix: [cols as u16, rows as u16],
            field_of_view: f3(h.recon_fov),
            position: f3(a.position),
            read_dir: f3(a.read_dir),
            phase_dir: f3(a.phase_dir),
            slice_dir: f3(a.slice_dir),
            patient_table_position: f3(a.patient_table_position),
            counters: [
                0,
                s.key.slice as u16,
                s.key.contrast as u16,
                s.key.phase as u16,
                s.key.repetition as u16,
                s.key.set as u16,
            ],
            acquisition_time_stamp: a.acquisition_time_stamp,
            physiology_time_stamp: a.physiology_time_stamp,
            // ISMRMRD's image_index is 16-bit: a session beyond 65535 slices repeats the last
            image_index: self.index.min(u16::MAX as u32) as u16,
            image_series_index: series,
        };
        let base = self
            .params
            .series_description
            .clone()
            .or_else(|| {
                h.info
                    .series_description
                    .clone()
                    .map(|d| format!("{d} inferd"))
            })
            .unwrap_or_else(|| "inferd".to_string());
        let comment = format!(
            "inferd {} reconstruction, {:.0} % of k-space measured",
            self.model_name,
            100.0 * fraction
        );
        let magnitude_image = |img: Vec<f32>, series: u16, suffix: &str| {
            let (pixels, window_max, scale) = match self.params.pixel_type {
                PixelType::Float => {
                    let max = img.iter().fold(0f32, |m, &v| m.max(v));
                    (None, max, 1.0)
                }
                PixelType::Ushort(fixed) => {
                    let max = img.iter().fold(0f32, |m, &v| m.max(v));
                    let scale = fixed.unwrap_or_else(|| {
                        *self
                            .scale
                            .get_or_init(|| if max > 0.0 { 3000.0 / max } else { 1.0 })
                    });
                    let q: Vec<u16> = img
                        .iter()
                        .map(|&v| (v * scale).round().clamp(0.0, 65535.0) as u16)
                        .collect();
                    (Some(q), max * scale, scale)
                }
            };
            let meta = protocol::meta_xml(&[
                ("DataRole", "Image".into()),
                ("ImageProcessingHistory", "INFERD".into()),
                ("SeriesDescription", format!("{base}{suffix}")),
                ("ImageComments", comment.clone()),
                ("WindowCenter", format!("{}", window_max / 2.0)),
                ("WindowWidth", format!("{}", window_max)),
                ("Keep_image_geometry", "1".into()),
                ("InferdScale", format!("{scale}")),
            ]);
            match pixels {
                None => protocol::image_message(&head(series), &meta, Pixels::Float(&img)),
                Some(q) => protocol::image_message(&head(series), &meta, Pixels::Ushort(q)),
            }
        };
        let mut msgs = vec![magnitude_image(crop(&o.magnitude), SERIES_MAGNITUDE, "")];
        if self.params.complex && !o.complex.is_empty() {
            let re: Vec<f32> = o.complex.iter().map(|c| c.re).collect();
            let im: Vec<f32> = o.complex.iter().map(|c| c.im).collect();
            let c: Vec<num_complex::Complex32> = crop(&re)
                .into_iter()
                .zip(crop(&im))
                .map(|(r, i)| num_complex::Complex32::new(r, i))
                .collect();
            let meta = protocol::meta_xml(&[
                ("DataRole", "Image".into()),
                ("SeriesDescription", format!("{base} complex")),
                ("ImageComments", comment.clone()),
                ("Keep_image_geometry", "1".into()),
            ]);
            msgs.push(protocol::image_message(
                &head(SERIES_COMPLEX),
                &meta,
                Pixels::Complex(&c),
            ));
        }
        if self.params.zero_filled && !o.zero_filled.is_empty() {
            msgs.push(magnitude_image(
                crop(&o.zero_filled),
                SERIES_ZERO_FILLED,
                " zero-filled",
            ));
        }
        msgs
    }
}
