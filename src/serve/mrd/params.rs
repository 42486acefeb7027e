//! The parameters of an MRD session, described once: [`PARAMETERS`] is what CONFIG_TEXT accepts
//! ([`Params::parse`]) and what the OpenRecon container label offers the scanner's user interface
//! ([`openrecon_label`]), so the two cannot drift apart.
//!
//! CONFIG_TEXT is a JSON object of parameter ids and values, either flat (`{"dc": "cg",
//! "lambda": 5}`) or OpenRecon's `{"parameters": {...}}`, whose values may arrive as text
//! (`"true"`, `"5.0"`). Unknown ids are refused with the list of accepted ones.

use crate::api::pb;
use serde_json::{json, Value};

/// The kind and range of a parameter (OpenRecon's parameter types).
pub enum Kind {
    /// One of `(id, label)`.
    Choice(&'static [(&'static str, &'static str)]),
    Double {
        min: f64,
        max: f64,
    },
    Int {
        min: i64,
        max: i64,
    },
    Boolean,
    Text {
        max_len: usize,
    },
}

/// One parameter: its id (letters and digits, as OpenRecon requires), label, help and default.
pub struct ParamSpec {
    pub id: &'static str,
    pub label: &'static str,
    pub information: &'static str,
    pub kind: Kind,
    pub default: &'static str,
}

pub const PARAMETERS: &[ParamSpec] = &[
    ParamSpec {
        id: "config",
        label: "Pipeline",
        information: "inferd (the default model; recon-radial for non-Cartesian scans), \
                      inferd-radial, or the name of a served reconstruction model",
        kind: Kind::Text { max_len: 128 },
        default: "inferd",
    },
    ParamSpec {
        id: "dc",
        label: "Data consistency",
        information: "How the measured k-space constrains the network's image",
        kind: Kind::Choice(&[
            ("default", "Model default"),
            ("hard", "Hard (keep measured samples)"),
            ("soft", "Soft (weighted by lambda)"),
            ("cg", "Least squares (CG)"),
            ("sense", "SENSE least squares (multi-coil)"),
            ("off", "Off (network output)"),
        ]),
        default: "default",
    },
    ParamSpec {
        id: "lambda",
        label: "DC weight",
        information: "Weight of the measured data for soft, cg and sense",
        kind: Kind::Double {
            min: 0.1,
            max: 1000.0,
        },
        default: "10.0",
    },
    ParamSpec {
        id: "iterations",
        label: "CG iterations",
        information: "Conjugate-gradient iterations for cg and sense (0: the mode's default)",
        kind: Kind::Int { min: 0, max: 50 },
        default: "0",
    },
    ParamSpec {
        id: "pixeltype",
        label: "Pixel type",
        information: "Magnitude images as unsigned 16-bit integers or 32-bit floats",
        kind: Kind::Choice(&[("uint16", "uint16"), ("float", "float")]),
        default: "uint16",
    },
    ParamSpec {
        id: "uint16scale",
        label: "uint16 scale",
        information: "Factor from image intensity to uint16 (0: the session's first image maps \
                      its maximum to 3000)",
        kind: Kind::Double {
            min: 0.0,
            max: 1.0e9,
        },
        default: "0.0",
    },
    ParamSpec {
        id: "complex",
        label: "Complex series",
        information: "Also send the complex image (series 2)",
        kind: Kind::Boolean,
        default: "false",
    },
    ParamSpec {
        id: "zerofilled",
        label: "Zero-filled series",
        information: "Also send the zero-filled / gridded image for comparison (series 3)",
        kind: Kind::Boolean,
        default: "false",
    },
    ParamSpec {
        id: "pacs",
        label: "Send to PACS",
        information: "Also store the magnitude images in the PACS the server is configured with, \
                      through its durable outbox",
        kind: Kind::Boolean,
        default: "false",
    },
    ParamSpec {
        id: "seriesdescription",
        label: "Series description",
        information: "Series description of the images (default: the scan's, with inferd)",
        kind: Kind::Text { max_len: 64 },
        default: "",
    },
];

/// Pixel type of magnitude images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PixelType {
    Float,
    /// Unsigned 16-bit, `value × scale` rounded and clamped; `None`: the session's first finished
    /// image sets the scale (its maximum to 3000, leaving headroom for brighter slices; 12-bit
    /// viewers show up to 4095) and every later image keeps it, so intensities compare across
    /// slices and series.
    Ushort(Option<f32>),
}

/// A session's parameters (defaults: [`PARAMETERS`]).
#[derive(Clone, Debug)]
pub struct Params {
    /// The pipeline, when CONFIG_TEXT names one (CONFIG_FILE's name otherwise).
    pub config: Option<String>,
    pub dc: Option<pb::DataConsistency>,
    pub pixel_type: PixelType,
    pub complex: bool,
    pub zero_filled: bool,
    /// Store the magnitude images in the server's PACS too.
    pub pacs: bool,
    pub series_description: Option<String>,
    /// W3C Trace Context of the caller (`traceparent`): the session's spans continue its trace.
    /// Not a scanner parameter (absent from the OpenRecon label); clients that trace set it.
    pub traceparent: Option<String>,
}

/// The CONFIG_TEXT key of [`Params::traceparent`].
pub const TRACEPARENT: &str = "traceparent";

impl Default for Params {
    fn default() -> Self {
        Params::parse("{}").expect("the defaults are valid")
    }
}

fn ids() -> String {
    PARAMETERS
        .iter()
        .map(|p| p.id)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parameter's value checked against its spec: text, number or boolean as JSON.
fn checked(spec: &ParamSpec, v: &Value) -> Result<Value, String> {
    let id = spec.id;
    let text = v.as_str();
    match &spec.kind {
        Kind::Choice(values) => {
            let s = text.unwrap_or_default();
            if values.iter().any(|(c, _)| *c == s) {
                Ok(json!(s))
            } else {
                let ok: Vec<_> = values.iter().map(|(c, _)| *c).collect();
                Err(format!("{id} {v} is not one of {}", ok.join(", ")))
            }
        }
        Kind::Double { min, max } => {
            let x = v
                .as_f64()
                .or_else(|| text.and_then(|t| t.trim().parse().ok()));
            match x {
                Some(x) if x.is_finite() && x >= *min && x <= *max => Ok(json!(x)),
                _ => Err(format!(
                    "{id} must be a number from {min} to {max}, got {v}"
                )),
            }
        }
        Kind::Int { min, max } => {
            let x = v
                .as_i64()
                .or_else(|| text.and_then(|t| t.trim().parse().ok()));
            match x {
                Some(x) if x >= *min && x <= *max => Ok(json!(x)),
                _ => Err(format!(
                    "{id} must be an integer from {min} to {max}, got {v}"
                )),
            }
        }
        Kind::Boolean => match (v.as_bool(), text) {
            (Some(b), _) => Ok(json!(b)),
            (_, Some("true")) => Ok(json!(true)),
            (_, Some("false")) => Ok(json!(false)),
            _ => Err(format!("{id} must be true or false, got {v}")),
        },
        Kind::Text { max_len } => match text {
            Some(t) if t.len() <= *max_len && !t.chars().any(char::is_control) => Ok(json!(t)),
            _ => Err(format!(
                "{id} must be text of at most {max_len} characters, got {v}"
            )),
        },
    }
}

impl Params {
    /// Parses CONFIG_TEXT (see the module documentation).
    pub fn parse(text: &str) -> Result<Params, String> {
        let v: Value = serde_json::from_str(text.trim_end_matches('\0')).map_err(|e| {
            format!(
                "CONFIG_TEXT is not JSON ({e}); expected an object with any of {}",
                ids()
            )
        })?;
        let obj = v
            .get("parameters")
            .unwrap_or(&v)
            .as_object()
            .ok_or_else(|| format!("CONFIG_TEXT must be a JSON object with any of {}", ids()))?;
        for k in obj.keys() {
            if k != TRACEPARENT && !PARAMETERS.iter().any(|p| p.id == k) {
                return Err(format!("unknown parameter {k:?}; accepted: {}", ids()));
            }
        }
        let value = |id: &str| -> Result<Value, String> {
            let spec = PARAMETERS.iter().find(|p| p.id == id).expect("a parameter");
            let default = match spec.kind {
                Kind::Double { .. } | Kind::Int { .. } | Kind::Boolean => {
                    serde_json::from_str(spec.default).expect("a valid default")
                }
                _ => json!(spec.default),
            };
            checked(spec, obj.get(id).unwrap_or(&default))
        };
        let given = |id: &str| obj.contains_key(id);
        use pb::data_consistency::Mode;
        let mode = match value("dc")?.as_str().unwrap_or_default() {
            "hard" => Mode::Hard,
            "soft" => Mode::Soft,
            "cg" => Mode::Cg,
            "sense" => Mode::Sense,
            "off" => Mode::Off,
            _ => Mode::Unspecified,
        };
        let lambda = value("lambda")?.as_f64().unwrap_or(10.0) as f32;
        let iterations = value("iterations")?.as_u64().unwrap_or(0) as u32;
        let weighted = matches!(mode, Mode::Soft | Mode::Cg | Mode::Sense);
        let dc = (mode != Mode::Unspecified).then(|| pb::DataConsistency {
            mode: mode as i32,
            lambda: if weighted { lambda } else { 0.0 },
            iterations,
        });
        let scale = value("uint16scale")?.as_f64().unwrap_or(0.0) as f32;
        let pixel_type = match value("pixeltype")?.as_str() {
            Some("float") => PixelType::Float,
            _ => PixelType::Ushort((scale > 0.0).then_some(scale)),
        };
        let description = value("seriesdescription")?
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok(Params {
            config: given("config")
                .then(|| value("config"))
                .transpose()?
                .and_then(|v| v.as_str().map(String::from)),
            dc,
            pixel_type,
            complex: value("complex")?.as_bool().unwrap_or(false),
            zero_filled: value("zerofilled")?.as_bool().unwrap_or(false),
            pacs: value("pacs")?.as_bool().unwrap_or(false),
            series_description: (!description.is_empty()).then_some(description),
            traceparent: match obj.get(TRACEPARENT) {
                None => None,
                // version-traceid-parentid-flags: 55 characters in version 00
                Some(Value::String(t)) if t.len() <= 128 && t.is_ascii() => Some(t.clone()),
                Some(v) => {
                    return Err(format!(
                        "{TRACEPARENT} must be a W3C traceparent string (00-<32 hex>-<16 hex>-<2 hex>), got {v}"
                    ))
                }
            },
        })
    }
}

/// The OpenRecon container label (`com.siemens-healthineers.magneticresonance.openrecon.metadata:1.1.0`,
/// base64 of this JSON): what the scanner shows and sends. Raw data in, images out, ISMRMRD on
/// port 9002, optional GPU.
pub fn openrecon_label() -> Value {
    let en = |s: &str| json!({ "en": s });
    let parameters: Vec<Value> = PARAMETERS
        .iter()
        .map(|p| {
            let mut o = json!({
                "id": p.id,
                "label": en(p.label),
                "information": en(p.information),
            });
            let m = o.as_object_mut().expect("an object");
            match &p.kind {
                Kind::Choice(values) => {
                    m.insert("type".into(), json!("choice"));
                    m.insert("default".into(), json!(p.default));
                    let v: Vec<Value> = values
                        .iter()
                        .map(|(id, name)| json!({ "id": id, "name": en(name) }))
                        .collect();
                    m.insert("values".into(), json!(v));
                }
                Kind::Double { min, max } => {
                    m.insert("type".into(), json!("double"));
                    m.insert("minimum".into(), json!(min));
                    m.insert("maximum".into(), json!(max));
                    m.insert("default".into(), serde_json::from_str(p.default).unwrap());
                }
                Kind::Int { min, max } => {
                    m.insert("type".into(), json!("int"));
                    m.insert("minimum".into(), json!(min));
                    m.insert("maximum".into(), json!(max));
                    m.insert("default".into(), serde_json::from_str(p.default).unwrap());
                }
                Kind::Boolean => {
                    m.insert("type".into(), json!("boolean"));
                    m.insert("default".into(), serde_json::from_str(p.default).unwrap());
                }
                Kind::Text { .. } => {
                    m.insert("type".into(), json!("string"));
                    m.insert("default".into(), json!(p.default));
                }
            }
            o
        })
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "general": {
            "name": en("inferd"),
            "version": version,
            "vendor": "inferd",
            "information": en("Deep-learning reconstruction of undersampled Cartesian and radial \
                               MR k-space (ReconResNet with data consistency)"),
            "id": "inferd",
            "regulatory_information": {
                "device_trade_name": "inferd",
                "production_identifier": version,
                "manufacturer_address": "",
                "made_in": "",
                "manufacture_date": "",
                "material_number": format!("inferd_{version}"),
                "gtin": "",
                "udi": "",
                "safety_advices": "",
                "special_operating_instructions": "Research use only: images are not for diagnosis.",
                "additional_relevant_information": "",
            },
        },
        "reconstruction": {
            "transfer_protocol": { "protocol": "ISMRMRD", "version": "1.4.1" },
            "port": 9002,
            "emitter": "raw",
            "injector": "image",
            "can_process_adjustment_data": false,
            "can_use_gpu": true,
            "min_count_required_gpus": 0,
            "min_required_gpu_memory": 2048,
            "min_required_memory": 4096,
            "min_count_required_cpu_cores": 2,
            "content_qualification_type": "RESEARCH",
        },
        "parameters": parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_and_openrecon_parameters_parse_the_same() {
        let flat =
            Params::parse(r#"{"dc": "cg", "lambda": 5, "complex": true, "pixeltype": "float"}"#)
                .unwrap();
        let or = Params::parse(
            r#"{"parameters": {"dc": "cg", "lambda": "5.0", "complex": "true", "pixeltype": "float"}}"#,
        )
        .unwrap();
        for p in [flat, or] {
            let dc = p.dc.unwrap();
            assert_eq!(
                (dc.mode, dc.lambda),
                (pb::data_consistency::Mode::Cg as i32, 5.0)
            );
            assert!(p.complex && !p.zero_filled);
            assert_eq!(p.pixel_type, PixelType::Float);
        }
        let d = Params::default();
        assert!(d.dc.is_none() && d.config.is_none());
        assert_eq!(d.pixel_type, PixelType::Ushort(None));
    }

    #[test]
    fn bad_parameters_say_what_is_accepted() {
        for (text, expected) in [
            ("<xml/>", "not JSON"),
            ("[1]", "JSON object"),
            (r#"{"colour": 1}"#, "accepted: config, dc"),
            (r#"{"dc": "magic"}"#, "not one of default, hard"),
            (r#"{"lambda": -1}"#, "from 0.1 to 1000"),
            (r#"{"iterations": 500}"#, "from 0 to 50"),
            (r#"{"complex": "yes"}"#, "true or false"),
            (r#"{"seriesdescription": "a\nb"}"#, "at most 64"),
        ] {
            let e = Params::parse(text).unwrap_err();
            assert!(e.contains(expected), "{text}: {e}");
        }
    }

    #[test]
    fn traceparent_is_accepted_but_not_a_scanner_parameter() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p = Params::parse(&json!({ "traceparent": tp, "dc": "cg" }).to_string()).unwrap();
        assert_eq!(p.traceparent.as_deref(), Some(tp));
        assert!(Params::default().traceparent.is_none());
        for bad in [json!(7), json!("é".repeat(10)), json!("0".repeat(129))] {
            let e = Params::parse(&json!({ "traceparent": bad }).to_string()).unwrap_err();
            assert!(e.contains("W3C traceparent"), "{e}");
        }
        assert!(!PARAMETERS.iter().any(|p| p.id == TRACEPARENT));
        assert!(!openrecon_label().to_string().contains(TRACEPARENT));
    }

    #[test]
    fn the_label_offers_every_parameter_with_a_default_that_parses() {
        let label = openrecon_label();
        for key in ["general", "reconstruction", "parameters"] {
            assert!(label.get(key).is_some(), "{key}");
        }
        assert_eq!(label["reconstruction"]["port"], 9002);
        let params = label["parameters"].as_array().unwrap();
        assert!(params.len() <= 14, "OpenRecon shows at most 14 parameters");
        let mut defaults = serde_json::Map::new();
        for (p, spec) in params.iter().zip(PARAMETERS) {
            let id = p["id"].as_str().unwrap();
            assert_eq!(id, spec.id);
            assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
            for field in ["type", "label", "default"] {
                assert!(p.get(field).is_some(), "{id} has no {field}");
            }
            defaults.insert(id.into(), p["default"].clone());
        }
        // the committed label (what images are built with) is this one
        let committed: Value =
            serde_json::from_str(include_str!("../../../deploy/openrecon/label.json")).unwrap();
        assert_eq!(
            committed, label,
            "deploy/openrecon/label.json is stale: regenerate it with `inferd openrecon-label`"
        );
        // what the scanner sends when nobody changes anything
        let sent = json!({ "parameters": defaults }).to_string();
        Params::parse(&sent).unwrap();
    }
}
