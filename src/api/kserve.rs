//! KServe v2 / Open Inference Protocol wire handling: the generated types, each model family's tensor
//! contract, and the decoding of inputs and parameters into checked values. Every failure names the
//! tensor and what was expected.

use super::tensor::{first_non_finite, heavy};
use crate::error::Result;
use crate::invalid;
use crate::models::Family;
use pb::{infer_parameter::ParameterChoice, model_infer_request::InferInputTensor, InferParameter};
use std::collections::HashMap;

/// Generated from `proto/inference/grpc_service.proto`.
pub mod pb {
    tonic::include_proto!("inference");
}

/// One tensor of a contract; `shape` includes the leading batch dimension, -1 = variable.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: &'static [i64],
    pub optional: bool,
}

const fn spec(name: &'static str, datatype: &'static str, shape: &'static [i64]) -> TensorSpec {
    TensorSpec {
        name,
        datatype,
        shape,
        optional: false,
    }
}

const fn optional(name: &'static str, datatype: &'static str, shape: &'static [i64]) -> TensorSpec {
    TensorSpec {
        name,
        datatype,
        shape,
        optional: true,
    }
}

/// The inputs and outputs a family's models take and give over KServe.
pub struct Contract {
    pub inputs: &'static [TensorSpec],
    pub outputs: &'static [TensorSpec],
}

const RECON_INPUTS: &[TensorSpec] = &[
    spec("kspace", "FP32", &[-1, -1, -1, -1, 2]),
    spec("mask", "FP32", &[-1, -1, -1]),
];
const RECON_OUTPUTS: &[TensorSpec] = &[spec("image", "FP32", &[-1, -1, -1])];
/// `recon-radial`: k-space `[B, C, S, R, 2]` (spokes, readout) on `traj` `[B, S, R, 2]` (kx, ky).
const RADIAL_INPUTS: &[TensorSpec] = &[
    spec("kspace", "FP32", &[-1, -1, -1, -1, 2]),
    spec("traj", "FP32", &[-1, -1, -1, 2]),
];
const BRIDGE_INPUTS: &[TensorSpec] = &[spec("x", "FP32", &[-1, -1])];
const BRIDGE_OUTPUTS: &[TensorSpec] = &[spec("y", "FP32", &[-1, -1, -1])];
/// Exactly one of `batch` (sets) and `edge_index` (graph neighbourhoods) is given.
const GRAPH_INPUTS: &[TensorSpec] = &[
    spec("x", "FP32", &[-1, -1]),
    optional("batch", "INT64", &[-1]),
    optional("edge_index", "INT64", &[2, -1]),
];
const GRAPH_OUTPUTS: &[TensorSpec] = &[spec("y", "FP32", &[-1, -1])];

/// A model's contract: its family's, except reconstruction models trained for radial sampling,
/// which take k-space on a trajectory.
pub fn contract_for(info: &crate::models::ModelInfo) -> Contract {
    if info.family == Family::Recon
        && info.property::<String>("sampling").as_deref() == Some("radial")
    {
        return Contract {
            inputs: RADIAL_INPUTS,
            outputs: RECON_OUTPUTS,
        };
    }
    contract(info.family)
}

pub fn contract(family: Family) -> Contract {
    let (inputs, outputs) = match family {
        Family::Recon => (RECON_INPUTS, RECON_OUTPUTS),
        Family::Bridge => (BRIDGE_INPUTS, BRIDGE_OUTPUTS),
        Family::Graph => (GRAPH_INPUTS, GRAPH_OUTPUTS),
    };
    Contract { inputs, outputs }
}

/// The data of one decoded input tensor.
#[derive(Debug)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Debug)]
pub struct Decoded {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Decoded {
    /// The FP32 data, or an error naming the tensor.
    pub fn f32(&self, name: &str) -> Result<&[f32]> {
        match &self.data {
            Data::F32(v) => Ok(v),
            Data::I64(_) => Err(invalid!("input {name} has datatype INT64, expected FP32")),
        }
    }

    pub fn i64(&self, name: &str) -> Result<&[i64]> {
        match &self.data {
            Data::I64(v) => Ok(v),
            Data::F32(_) => Err(invalid!("input {name} has datatype FP32, expected INT64")),
        }
    }
}

/// Decodes every input of a request (raw contents or typed contents), keyed by name. Checks the
/// datatype against the contract, byte counts against shapes, and that floats are finite.
pub fn decode_inputs(
    inputs: &[InferInputTensor],
    raw: &[Vec<u8>],
    contract: &Contract,
) -> Result<HashMap<String, Decoded>> {
    if !raw.is_empty() && raw.len() != inputs.len() {
        return Err(invalid!(
            "raw_input_contents has {} entries for {} inputs; expected one per input, in order",
            raw.len(),
            inputs.len()
        ));
    }
    let mut out = HashMap::new();
    for (i, t) in inputs.iter().enumerate() {
        let spec = contract
            .inputs
            .iter()
            .find(|s| s.name == t.name)
            .ok_or_else(|| {
                let names: Vec<&str> = contract.inputs.iter().map(|s| s.name).collect();
                invalid!("unexpected input {:?}; this model takes {names:?}", t.name)
            })?;
        if t.datatype != spec.datatype {
            return Err(invalid!(
                "input {} has datatype {:?}, expected {}",
                t.name,
                t.datatype,
                spec.datatype
            ));
        }
        let shape = check_shape(&t.name, &t.shape, spec.shape)?;
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| invalid!("input {} has shape {:?}, too large", t.name, t.shape))?;
        let data = heavy(count.saturating_mul(4), || {
            let data = match raw.get(i) {
                Some(bytes) => decode_raw(&t.name, spec.datatype, bytes, count)?,
                None => decode_typed(t, spec.datatype, count)?,
            };
            if let Data::F32(v) = &data {
                if let Some(j) = first_non_finite(v) {
                    return Err(invalid!(
                        "input {} has a non-finite value at flat index {j}; all values must be finite",
                        t.name
                    ));
                }
            }
            Ok(data)
        })?;
        if out
            .insert(t.name.clone(), Decoded { shape, data })
            .is_some()
        {
            return Err(invalid!("input {} is given twice", t.name));
        }
    }
    for spec in contract.inputs.iter().filter(|s| !s.optional) {
        if !out.contains_key(spec.name) {
            return Err(invalid!(
                "missing input {}: {} {:?} (-1 = any size)",
                spec.name,
                spec.datatype,
                spec.shape
            ));
        }
    }
    Ok(out)
}

fn check_shape(name: &str, got: &[i64], want: &[i64]) -> Result<Vec<usize>> {
    let fits = got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(&g, &w)| g >= 0 && (w == -1 || g == w));
    if !fits {
        return Err(invalid!(
            "input {name} has shape {got:?}, expected {want:?} (-1 = any size)"
        ));
    }
    Ok(got.iter().map(|&d| d as usize).collect())
}

fn decode_raw(name: &str, datatype: &str, bytes: &[u8], count: usize) -> Result<Data> {
    let size = if datatype == "INT64" { 8 } else { 4 };
    if Some(bytes.len()) != count.checked_mul(size) {
        return Err(invalid!(
            "input {name} carries {} raw bytes; its shape needs {count} {datatype} values = {} bytes",
            bytes.len(),
            count.saturating_mul(size)
        ));
    }
    Ok(match datatype {
        "INT64" => Data::I64(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect(),
        ),
        _ => Data::F32(raw_f32(bytes)),
    })
}

fn decode_typed(t: &InferInputTensor, datatype: &str, count: usize) -> Result<Data> {
    let contents = t.contents.as_ref();
    let (data, got) = match datatype {
        "INT64" => {
            let v = contents
                .map(|c| c.int64_contents.clone())
                .unwrap_or_default();
            let n = v.len();
            (Data::I64(v), n)
        }
        _ => {
            let v = contents
                .map(|c| c.fp32_contents.clone())
                .unwrap_or_default();
            let n = v.len();
            (Data::F32(v), n)
        }
    };
    if got != count {
        return Err(invalid!(
            "input {} has {got} values in contents (and no raw_input_contents); its shape {:?} needs {count}",
            t.name,
            t.shape
        ));
    }
    Ok(data)
}

/// FP32 values as KServe raw contents (little-endian).
pub fn f32_raw(v: &[f32]) -> Vec<u8> {
    heavy(4 * v.len(), || {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    })
}

/// INT64 values as KServe raw contents (little-endian).
pub fn i64_raw(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// KServe raw contents as FP32 values (a trailing partial value is ignored).
pub fn raw_f32(bytes: &[u8]) -> Vec<f32> {
    crate::io::le_f32s(bytes)
}

/// Typed access to request parameters.
pub struct Params<'a>(pub &'a HashMap<String, InferParameter>);

impl Params<'_> {
    fn get(&self, name: &str) -> Option<&ParameterChoice> {
        self.0.get(name).and_then(|p| p.parameter_choice.as_ref())
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(ParameterChoice::Int64Param(v)) => Ok(Some(*v)),
            Some(ParameterChoice::Uint64Param(v)) => i64::try_from(*v)
                .map(Some)
                .map_err(|_| invalid!("parameter {name} = {v} is out of range")),
            Some(other) => Err(invalid!(
                "parameter {name} is {}, expected an integer",
                kind(other)
            )),
        }
    }

    pub fn float(&self, name: &str) -> Result<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(ParameterChoice::DoubleParam(v)) => Ok(Some(*v)),
            Some(ParameterChoice::Int64Param(v)) => Ok(Some(*v as f64)),
            Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v as f64)),
            Some(other) => Err(invalid!(
                "parameter {name} is {}, expected a number",
                kind(other)
            )),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<&str>> {
        match self.get(name) {
            None => Ok(None),
            Some(ParameterChoice::StringParam(s)) => Ok(Some(s)),
            Some(other) => Err(invalid!(
                "parameter {name} is {}, expected a string",
                kind(other)
            )),
        }
    }
}

fn kind(p: &ParameterChoice) -> &'static str {
    match p {
        ParameterChoice::BoolParam(_) => "a bool",
        ParameterChoice::Int64Param(_) => "an int64",
        ParameterChoice::StringParam(_) => "a string",
        ParameterChoice::DoubleParam(_) => "a double",
        ParameterChoice::Uint64Param(_) => "a uint64",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_raw_inputs_and_names_every_mistake() {
        let c = contract(Family::Recon);
        let k = input("kspace", "FP32", &[1, 1, 2, 2, 2]);
        let m = input("mask", "FP32", &[1, 2, 2]);
        let raw = vec![f32_raw(&[1.0; 8]), f32_raw(&[1.0, 0.0, 1.0, 0.0])];
        let d = decode_inputs(&[k.clone(), m.clone()], &raw, &c).unwrap();
        assert_eq!(d["mask"].shape, vec![1, 2, 2]);
        assert_eq!(d["mask"].f32("mask").unwrap(), &[1.0, 0.0, 1.0, 0.0]);

        let err = |inputs: &[InferInputTensor], raw: &[Vec<u8>]| {
            decode_inputs(inputs, raw, &c).unwrap_err().to_string()
        };
        assert!(err(&[k.clone()], &raw[..1]).contains("missing input mask"));
        assert!(
            err(&[k.clone(), input("mask", "FP64", &[1, 2, 2])], &raw).contains("expected FP32")
        );
        assert!(err(
            &[input("kspace", "FP32", &[1, 1, 2, 2, 3]), m.clone()],
            &raw
        )
        .contains("expected [-1, -1, -1, -1, 2]"));
        assert!(err(
            &[input("kspace", "FP32", &[1, 0, 2, 2, 2]), m.clone()],
            &raw
        )
        .contains("raw bytes"));
        assert!(err(&[k.clone(), m.clone()], &[raw[0].clone(), vec![0; 3]]).contains("raw bytes"));
        assert!(err(&[k.clone(), m.clone()], &raw[..1]).contains("one per input"));
        let nan = vec![f32_raw(&[f32::NAN; 8]), raw[1].clone()];
        assert!(err(&[k.clone(), m.clone()], &nan).contains("non-finite"));
        assert!(err(&[input("image", "FP32", &[1])], &[]).contains("unexpected input"));
    }

    #[test]
    fn typed_contents_are_accepted() {
        let c = contract(Family::Recon);
        let mut m = input("mask", "FP32", &[1, 1, 2]);
        m.contents = Some(pb::InferTensorContents {
            fp32_contents: vec![1.0, 0.0],
            ..Default::default()
        });
        let mut k = input("kspace", "FP32", &[1, 1, 1, 2, 2]);
        k.contents = Some(pb::InferTensorContents {
            fp32_contents: vec![0.5; 4],
            ..Default::default()
        });
        let d = decode_inputs(&[k, m], &[], &c).unwrap();
        assert_eq!(d["kspace"].f32("kspace").unwrap(), &[0.5; 4]);
    }

    #[test]
    fn parameters_are_typed() {
        let mut map = HashMap::new();
        let p = |c| InferParameter {
            parameter_choice: Some(c),
        };
        map.insert("a".to_string(), p(ParameterChoice::Uint64Param(3)));
        map.insert("b".to_string(), p(ParameterChoice::DoubleParam(0.5)));
        map.insert(
            "c".to_string(),
            p(ParameterChoice::StringParam("soft".into())),
        );
        let params = Params(&map);
        assert_eq!(params.int("a").unwrap(), Some(3));
        assert_eq!(params.float("b").unwrap(), Some(0.5));
        assert_eq!(params.float("a").unwrap(), Some(3.0));
        assert_eq!(params.string("c").unwrap(), Some("soft"));
        assert!(params.int("b").is_err());
        assert_eq!(params.int("missing").unwrap(), None);
    }
}
