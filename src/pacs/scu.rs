//! A blocking DICOM service class user: C-ECHO (verification) and C-STORE (storage) over the DICOM
//! upper layer protocol (PS3.8), on top of `dicom-ul`.
//!
//! DIMSE command sets (PS3.7 §9.3) are encoded here directly: they are short, always Implicit VR
//! Little Endian, and start with their group length (0000,0000). Data sets travel as they are in
//! the Part-10 file when the PACS accepts the file's transfer syntax, and are re-encoded between the
//! native (uncompressed) transfer syntaxes when it accepted another one. P-DATA-TF PDUs never exceed
//! the maximum length the PACS announced in its A-ASSOCIATE-AC.

use super::PacsTarget;
use anyhow::{anyhow, bail, Context};
use dicom_object::{FileMetaTable, InMemDicomObject};
use dicom_transfer_syntax_registry::entries;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION_SOP_CLASS: &str = "1.2.840.10008.1.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";

/// DIMSE status "Refused: SOP Class not supported" (PS3.7 C.5.5), reported for an instance whose
/// SOP class (or transfer syntax) the PACS did not accept during association negotiation: it was
/// never sent, and sending it again would meet the same answer.
pub const STATUS_SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
/// DIMSE status "Error: Cannot understand" (PS3.4 B.2.3), reported for a file that is not a
/// readable Part-10 file or cannot be converted to the accepted transfer syntax; it was never sent.
pub const STATUS_CANNOT_UNDERSTAND: u16 = 0xC000;

const C_STORE_RQ: u16 = 0x0001;
const C_STORE_RSP: u16 = 0x8001;
const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
const NO_DATA_SET: u16 = 0x0101;
const DATA_SET_PRESENT: u16 = 0x0000;
const PRIORITY_MEDIUM: u16 = 0x0000;
/// A presentation context ID is an odd number in 1..=255: at most 128 per association.
const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// The PACS's answer for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOutcome {
    pub sop_instance_uid: String,
    /// The DIMSE status of the C-STORE-RSP, or [`STATUS_SOP_CLASS_NOT_SUPPORTED`] /
    /// [`STATUS_CANNOT_UNDERSTAND`] for an instance that could not be sent at all.
    pub status: u16,
    /// Success or warning: the PACS has the instance.
    pub stored: bool,
    /// The response's Error Comment (0000,0902), or why the instance was not sent.
    pub error_comment: Option<String>,
}

/// How a DIMSE status of a C-STORE-RSP is to be treated by a sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// Success (0x0000) or a warning (0x0001, 0x0107, 0x0116, 0xBxxx: coercion of data elements,
    /// elements discarded, data set does not match SOP class): the PACS keeps the instance.
    Stored,
    /// A failure that will not go away by sending the same bytes again: out of resources or refused
    /// (0xA7xx), data set does not match the SOP class (0xA9xx), cannot understand (0xCxxx), SOP
    /// class not supported, not authorized, invalid instance (0x01xx, 0x02xx).
    Refused,
    /// A failure that may pass: processing failure (0x0110), resource limitation (0x0213),
    /// cancelled (0xFE00), or a pending status where a final one was expected (0xFF00, 0xFF01).
    Transient,
}

/// Classifies a C-STORE-RSP status (PS3.4 B.2.3, PS3.7 C).
pub fn classify(status: u16) -> StatusClass {
    match status {
        0x0000 | 0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Stored,
        0x0110 | 0x0213 | 0xFE00 | 0xFF00 | 0xFF01 => StatusClass::Transient,
        _ => StatusClass::Refused,
    }
}

fn options(t: &PacsTarget) -> ClientAssociationOptions<'static> {
    ClientAssociationOptions::new()
        .calling_ae_title(t.calling_aet.clone())
        .called_ae_title(t.called_aet.clone())
        .connection_timeout(t.timeout)
        .read_timeout(t.timeout)
        .write_timeout(t.timeout)
}

/// Turns an association error into one that says what failed, towards whom.
fn association_error(t: &PacsTarget, e: dicom_ul::association::Error) -> anyhow::Error {
    use dicom_ul::association::Error as E;
    match e {
        E::Connect { source, .. } => anyhow!("cannot connect to PACS {t}: {source}"),
        E::ToAddress { source, .. } => anyhow!("cannot resolve PACS address {t}: {source}"),
        E::Rejected { association_rj, .. } => anyhow!(
            "PACS {t} rejected the association ({:?}): {} (calling AE title {:?})",
            association_rj.result,
            association_rj.source,
            t.calling_aet
        ),
        E::NoAcceptedPresentationContexts { .. } => {
            anyhow!("PACS {t} accepted none of the proposed presentation contexts")
        }
        E::Aborted { .. } => anyhow!("PACS {t} aborted the association"),
        E::Timeout { .. } => anyhow!("PACS {t} did not answer within {:?}", t.timeout),
        other => {
            let mut msg = format!("association with PACS {t} failed: {other}");
            let mut src = std::error::Error::source(&other);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            anyhow!(msg)
        }
    }
}

/// C-ECHO: opens an association proposing only the Verification SOP class, sends one C-ECHO-RQ and
/// releases. Errors name what failed: connecting, the association (rejected, with the PACS's reason),
/// or the response status.
pub fn echo(t: &PacsTarget) -> anyhow::Result<()> {
    let mut a = options(t)
        .with_presentation_context(VERIFICATION_SOP_CLASS, vec![IMPLICIT_VR_LE, EXPLICIT_VR_LE])
        .establish(t.socket_addr())
        .map_err(|e| association_error(t, e))?;
    no_delay(&mut a);
    let pc = a.presentation_contexts()[0].id;
    let result = (|| {
        let cmd = command(&[
            (0x0002, uid_value(VERIFICATION_SOP_CLASS)),
            (0x0100, C_ECHO_RQ.to_le_bytes().to_vec()),
            (0x0110, 1u16.to_le_bytes().to_vec()),
            (0x0800, NO_DATA_SET.to_le_bytes().to_vec()),
        ]);
        send_command(&mut a, pc, cmd)?;
        let rsp = receive_command(&mut a, t)?;
        if rsp.command_field != Some(C_ECHO_RSP) {
            bail!(
                "PACS {t} answered the C-ECHO with command {:#06x}",
                rsp.command_field.unwrap_or(0)
            );
        }
        match rsp.status {
            Some(0) => Ok(()),
            Some(s) => bail!("PACS {t} answered the C-ECHO with status {s:#06x}"),
            None => bail!("PACS {t} answered the C-ECHO without a status"),
        }
    })();
    finish(a, &result);
    result
}

/// Turns off Nagle's algorithm: a DIMSE exchange writes a small command PDU and then waits for the
/// answer, the pattern where Nagle and delayed acknowledgements add ~40 ms per message.
fn no_delay(a: &mut ClientAssociation<TcpStream>) {
    if let Err(e) = a.inner_stream().set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Releases the association after a complete exchange; aborts it after a failed one, where the
/// peer's state is unknown.
fn finish<T>(a: ClientAssociation<TcpStream>, result: &anyhow::Result<T>) {
    if result.is_ok() {
        if let Err(e) = a.release() {
            tracing::debug!(error = %e, "association release failed");
        }
    } else {
        let _ = a.abort();
    }
}

/// Stores Part-10 files (bytes including the 128-byte preamble, "DICM" and the file meta group; a
/// file without preamble is accepted too) over one association, in order.
///
/// One presentation context is proposed per SOP class in the batch, with the transfer syntax of its
/// first file followed by Explicit and Implicit VR Little Endian; a data set whose transfer syntax
/// differs from the accepted one is re-encoded. Encapsulated (compressed) files are proposed in their
/// own transfer syntax only, in a separate context, since they cannot be decoded here.
///
/// Returns `Err` only when the association cannot be established or the transport fails. Every
/// instance's DIMSE status is in the result, in the order of `files`; an instance the PACS did not
/// accept in negotiation is reported as [`STATUS_SOP_CLASS_NOT_SUPPORTED`], a file that cannot be
/// read as [`STATUS_CANNOT_UNDERSTAND`].
pub fn store(t: &PacsTarget, files: &[Vec<u8>]) -> anyhow::Result<Vec<StoreOutcome>> {
    let mut out: Vec<Option<StoreOutcome>> = vec![None; files.len()];
    store_each(t, files, |i, o| out[i] = Some(o))?;
    Ok(out.into_iter().flatten().collect())
}

/// A file ready to be sent: its identity and where its data set starts.
struct Prepared {
    sop_class: String,
    sop_instance: String,
    ts: String,
    data_offset: usize,
    /// Index into the proposed presentation contexts.
    context: usize,
}

/// Like [`store`], but reports each instance's outcome as soon as the PACS answered it, with the
/// instance's index in `files`; on a transport failure the instances answered before it have been
/// reported. The outbox uses this to remove each file as soon as it is safe in the PACS.
pub fn store_each(
    t: &PacsTarget,
    files: &[Vec<u8>],
    mut on_outcome: impl FnMut(usize, StoreOutcome),
) -> anyhow::Result<()> {
    // Read the file meta groups and plan the presentation contexts.
    let mut contexts: Vec<(String, Vec<String>)> = Vec::new();
    let mut by_key: HashMap<(String, String), usize> = HashMap::new();
    let mut prepared: Vec<Option<Prepared>> = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        match read_meta(f) {
            Ok((meta, data_offset)) => {
                let sop_class = meta.media_storage_sop_class_uid().to_string();
                let ts = meta.transfer_syntax().to_string();
                let key = (
                    sop_class.clone(),
                    if is_native(&ts) {
                        String::new()
                    } else {
                        ts.clone()
                    },
                );
                let context = *by_key.entry(key).or_insert_with(|| {
                    let syntaxes = if is_native(&ts) {
                        let mut v = vec![ts.clone()];
                        for s in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
                            if s != ts {
                                v.push(s.to_string());
                            }
                        }
                        v
                    } else {
                        vec![ts.clone()]
                    };
                    contexts.push((sop_class.clone(), syntaxes));
                    contexts.len() - 1
                });
                prepared.push(Some(Prepared {
                    sop_class,
                    sop_instance: meta.media_storage_sop_instance_uid().to_string(),
                    ts,
                    data_offset,
                    context,
                }));
            }
            Err(e) => {
                prepared.push(None);
                on_outcome(
                    i,
                    StoreOutcome {
                        sop_instance_uid: String::new(),
                        status: STATUS_CANNOT_UNDERSTAND,
                        stored: false,
                        error_comment: Some(format!("not a readable DICOM Part-10 file: {e:#}")),
                    },
                );
            }
        }
    }
    if contexts.is_empty() {
        return Ok(());
    }
    if contexts.len() > MAX_PRESENTATION_CONTEXTS {
        bail!(
            "{} distinct SOP classes and transfer syntaxes in one batch; an association holds at most {MAX_PRESENTATION_CONTEXTS}",
            contexts.len()
        );
    }
    let mut opts = options(t);
    for (class, syntaxes) in &contexts {
        opts = opts.with_presentation_context(class.clone(), syntaxes.clone());
    }
    let mut a = match opts.establish(t.socket_addr()) {
        Ok(a) => a,
        Err(dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => {
            // The PACS is there and answered: it takes none of these SOP classes.
            for (i, p) in prepared.iter().enumerate() {
                if let Some(p) = p {
                    on_outcome(i, not_accepted(p));
                }
            }
            return Ok(());
        }
        Err(e) => return Err(association_error(t, e)),
    };
    no_delay(&mut a);
    let result = (|| {
        let mut message_id: u16 = 0;
        for (i, p) in prepared.iter().enumerate() {
            let Some(p) = p else { continue };
            // dicom-ul numbers the proposed contexts 1, 3, 5, ... in the order given.
            let pc_id = (2 * p.context + 1) as u8;
            let Some(accepted) = a
                .presentation_contexts()
                .iter()
                .find(|pc| pc.id == pc_id)
                .map(|pc| pc.transfer_syntax.trim_end_matches(['\0', ' ']).to_string())
            else {
                on_outcome(i, not_accepted(p));
                continue;
            };
            let file = &files[i];
            let reencoded;
            let data: &[u8] = if accepted == p.ts {
                &file[p.data_offset..]
            } else {
                match reencode(&file[p.data_offset..], &p.ts, &accepted) {
                    Ok(d) => {
                        reencoded = d;
                        &reencoded
                    }
                    Err(e) => {
                        on_outcome(
                            i,
                            StoreOutcome {
                                sop_instance_uid: p.sop_instance.clone(),
                                status: STATUS_CANNOT_UNDERSTAND,
                                stored: false,
                                error_comment: Some(format!("{e:#}")),
                            },
                        );
                        continue;
                    }
                }
            };
            message_id = message_id.wrapping_add(1).max(1);
            let cmd = command(&[
                (0x0002, uid_value(&p.sop_class)),
                (0x0100, C_STORE_RQ.to_le_bytes().to_vec()),
                (0x0110, message_id.to_le_bytes().to_vec()),
                (0x0700, PRIORITY_MEDIUM.to_le_bytes().to_vec()),
                (0x0800, DATA_SET_PRESENT.to_le_bytes().to_vec()),
                (0x1000, uid_value(&p.sop_instance)),
            ]);
            send_command(&mut a, pc_id, cmd)?;
            // The writer cuts the data set into P-DATA-TF PDUs of at most the PACS's maximum length.
            let mut w = a.send_pdata(pc_id);
            w.write_all(data)
                .and_then(|_| w.finish())
                .with_context(|| format!("sending a data set to PACS {t}"))?;
            let rsp = receive_command(&mut a, t)?;
            if rsp.command_field != Some(C_STORE_RSP) || rsp.responded_to != Some(message_id) {
                bail!(
                    "PACS {t} answered C-STORE message {message_id} with command {:?} for message {:?}",
                    rsp.command_field,
                    rsp.responded_to
                );
            }
            let status = rsp
                .status
                .with_context(|| format!("PACS {t} answered a C-STORE without a status"))?;
            let stored = classify(status) == StatusClass::Stored;
            if stored {
                tracing::debug!(sop_instance_uid = %p.sop_instance, status, "stored");
            } else {
                tracing::warn!(sop_instance_uid = %p.sop_instance, status = format!("{status:#06x}"), "PACS refused an instance");
            }
            on_outcome(
                i,
                StoreOutcome {
                    sop_instance_uid: p.sop_instance.clone(),
                    status,
                    stored,
                    error_comment: rsp.error_comment,
                },
            );
        }
        Ok(())
    })();
    finish(a, &result);
    result
}

fn not_accepted(p: &Prepared) -> StoreOutcome {
    StoreOutcome {
        sop_instance_uid: p.sop_instance.clone(),
        status: STATUS_SOP_CLASS_NOT_SUPPORTED,
        stored: false,
        error_comment: Some(format!(
            "the PACS accepted no presentation context for SOP class {} in transfer syntax {}",
            p.sop_class, p.ts
        )),
    }
}

/// The file meta group of a Part-10 file and the offset of its data set.
fn read_meta(file: &[u8]) -> anyhow::Result<(FileMetaTable, usize)> {
    let start = if file.get(128..132) == Some(b"DICM") {
        128
    } else if file.get(0..4) == Some(b"DICM") {
        0
    } else {
        bail!("no \"DICM\" prefix at offset 128 or 0");
    };
    let meta = FileMetaTable::from_reader(&file[start..])?;
    // "DICM", then (0002,0000) UL in explicit VR: 4 bytes tag, 2 VR, 2 length, 4 value.
    let offset = start + 4 + 12 + meta.information_group_length as usize;
    if offset > file.len() {
        bail!("file meta group length runs past the end of the file");
    }
    if meta.media_storage_sop_instance_uid().is_empty()
        || meta.media_storage_sop_class_uid().is_empty()
    {
        bail!("file meta group without SOP class or SOP instance UID");
    }
    Ok((meta, offset))
}

fn is_native(ts: &str) -> bool {
    matches!(ts, IMPLICIT_VR_LE | EXPLICIT_VR_LE | EXPLICIT_VR_BE)
}

fn native_ts(uid: &str) -> Option<dicom_transfer_syntax_registry::TransferSyntax> {
    match uid {
        IMPLICIT_VR_LE => Some(entries::IMPLICIT_VR_LITTLE_ENDIAN.erased()),
        EXPLICIT_VR_LE => Some(entries::EXPLICIT_VR_LITTLE_ENDIAN.erased()),
        EXPLICIT_VR_BE => Some(entries::EXPLICIT_VR_BIG_ENDIAN.erased()),
        _ => None,
    }
}

/// Re-encodes a data set between native transfer syntaxes.
fn reencode(data: &[u8], from: &str, to: &str) -> anyhow::Result<Vec<u8>> {
    let (Some(from_ts), Some(to_ts)) = (native_ts(from), native_ts(to)) else {
        bail!("cannot convert a data set from transfer syntax {from} to {to}");
    };
    let obj = InMemDicomObject::read_dataset_with_ts(data, &from_ts)
        .with_context(|| format!("reading a data set in transfer syntax {from}"))?;
    let mut out = Vec::with_capacity(data.len() + 1024);
    obj.write_dataset_with_ts(&mut out, &to_ts)
        .with_context(|| format!("writing a data set in transfer syntax {to}"))?;
    Ok(out)
}

/// A UID value padded with NUL to an even length (PS3.5 §9.1).
fn uid_value(uid: &str) -> Vec<u8> {
    let mut v = uid.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// Encodes a command set in Implicit VR Little Endian: (0000,0000) group length, then the given
/// elements of group 0000, which must be in ascending order of element number.
fn command(elements: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    for (elem, value) in elements {
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&elem.to_le_bytes());
        body.extend_from_slice(&(value.len() as u32).to_le_bytes());
        body.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&[0, 0, 0, 0, 4, 0, 0, 0]);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The fields of a response command set this client looks at.
#[derive(Debug, Default, PartialEq, Eq)]
struct Response {
    command_field: Option<u16>,
    responded_to: Option<u16>,
    status: Option<u16>,
    error_comment: Option<String>,
}

/// Decodes an Implicit VR Little Endian command set.
fn parse_command(mut b: &[u8]) -> anyhow::Result<Response> {
    let mut r = Response::default();
    while !b.is_empty() {
        if b.len() < 8 {
            bail!("truncated element header in a command set");
        }
        let group = u16::from_le_bytes([b[0], b[1]]);
        let elem = u16::from_le_bytes([b[2], b[3]]);
        let len = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
        let value = b
            .get(8..8 + len)
            .context("element value runs past the end of a command set")?;
        let us = || (len == 2).then(|| u16::from_le_bytes([value[0], value[1]]));
        if group == 0x0000 {
            match elem {
                0x0100 => r.command_field = us(),
                0x0120 => r.responded_to = us(),
                0x0900 => r.status = us(),
                0x0902 => {
                    r.error_comment = Some(
                        String::from_utf8_lossy(value)
                            .trim_end_matches(['\0', ' '])
                            .to_string(),
                    )
                }
                _ => {}
            }
        }
        b = &b[8 + len..];
    }
    Ok(r)
}

fn send_command(
    a: &mut ClientAssociation<TcpStream>,
    pc_id: u8,
    cmd: Vec<u8>,
) -> anyhow::Result<()> {
    a.send(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc_id,
            value_type: PDataValueType::Command,
            is_last: true,
            data: cmd,
        }],
    })
    .context("sending a DIMSE command")
}

/// Reads PDUs until a complete command set has arrived (responses to C-STORE and C-ECHO carry no
/// data set).
fn receive_command(
    a: &mut ClientAssociation<TcpStream>,
    t: &PacsTarget,
) -> anyhow::Result<Response> {
    let mut buf = Vec::new();
    loop {
        let pdu = a.receive().map_err(|e| association_error(t, e))?;
        match pdu {
            Pdu::PData { data } => {
                for v in data {
                    if v.value_type == PDataValueType::Command {
                        buf.extend_from_slice(&v.data);
                        if v.is_last {
                            return parse_command(&buf);
                        }
                    }
                }
            }
            Pdu::AbortRQ { source } => bail!("PACS {t} aborted the association ({source:?})"),
            Pdu::ReleaseRQ => bail!("PACS {t} asked to release the association mid-operation"),
            other => bail!(
                "unexpected PDU from PACS {t}: {:?}",
                std::mem::discriminant(&other)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_store_statuses() {
        for s in [0x0000, 0xB000, 0xB007, 0xB006, 0x0001, 0x0107, 0x0116] {
            assert_eq!(classify(s), StatusClass::Stored, "{s:#06x}");
        }
        for s in [
            0xA700, 0xA7FF, 0xA900, 0xA9FF, 0xC000, 0xCFFF, 0x0122, 0x0124, 0x0117, 0x0211,
        ] {
            assert_eq!(classify(s), StatusClass::Refused, "{s:#06x}");
        }
        for s in [0x0110, 0x0213, 0xFE00] {
            assert_eq!(classify(s), StatusClass::Transient, "{s:#06x}");
        }
    }

    #[test]
    fn command_sets_round_trip() {
        let cmd = command(&[
            (0x0002, uid_value("1.2.840.10008.5.1.4.1.1.4")),
            (0x0100, C_STORE_RQ.to_le_bytes().to_vec()),
            (0x0110, 7u16.to_le_bytes().to_vec()),
        ]);
        // group length covers everything after its own 12 bytes
        assert_eq!(
            u32::from_le_bytes(cmd[8..12].try_into().unwrap()) as usize,
            cmd.len() - 12
        );
        // the odd-length UID is padded with NUL
        assert_eq!(&cmd[12..20], &[0, 0, 2, 0, 26, 0, 0, 0]);
        assert_eq!(cmd[20 + 25], 0);
        let rsp = command(&[
            (0x0100, C_STORE_RSP.to_le_bytes().to_vec()),
            (0x0120, 7u16.to_le_bytes().to_vec()),
            (0x0900, 0xA700u16.to_le_bytes().to_vec()),
            (0x0902, b"disk full ".to_vec()),
        ]);
        let r = parse_command(&rsp).unwrap();
        assert_eq!(
            r,
            Response {
                command_field: Some(C_STORE_RSP),
                responded_to: Some(7),
                status: Some(0xA700),
                error_comment: Some("disk full".into()),
            }
        );
        assert!(parse_command(&rsp[..rsp.len() - 3]).is_err());
    }

    #[test]
    fn unreadable_files_are_reported_not_sent() {
        let t = PacsTarget::parse("127.0.0.1:9", "A", "B").unwrap();
        // No association is attempted when no file is readable: port 9 is never contacted.
        let out = store(&t, &[b"not dicom".to_vec(), vec![0; 200]]).unwrap();
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .all(|o| o.status == STATUS_CANNOT_UNDERSTAND && !o.stored));
    }
}
