//! The `inferd.v1.Graph` service: set and graph aggregation for inputs of any size. The client
//! streams a header, then node features and edges (or set ids) in chunks; the server checks every
//! chunk as it arrives, builds the CSR neighbourhoods once the stream ends, runs the model as one
//! scheduler item and streams the output rows back in chunks.

use super::budget::{MemoryBudget, Reservation};
use super::limits::next_message;
use super::state::ServerState;
use crate::api::pb::{self, graph_request::Msg, graph_server::Graph};
use crate::api::tensor::heavy;
use crate::api::{tensor, validate};
use crate::error::{Error, Result};
use crate::invalid;
use crate::metrics::RequestGuard;
use crate::models::{lcm::Csr, Family, GraphInput, Input, Output};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

pub struct GraphService {
    pub state: Arc<ServerState>,
}

/// Most values of x (N · F) in one stream.
const MAX_VALUES: u64 = 1 << 28;
/// Most edges or set ids in one stream.
const MAX_EDGES: usize = 1 << 28;
/// Default response chunk size in bytes.
const CHUNK_BYTES: usize = 4 << 20;

/// The model's sizes: the stream's peak memory is reserved from the server's budget (and checked
/// against the per-request limit) at the header (nodes), and grown as edges arrive.
#[derive(Clone, Copy)]
struct GraphCost {
    features: u64,
    hidden: u64,
    out: u64,
}

impl GraphCost {
    fn what(nodes: u64, edges: u64) -> String {
        format!("a graph of {nodes} nodes and {edges} edges")
    }

    fn bytes(&self, nodes: u64, edges: u64) -> Option<u64> {
        validate::graph_bytes(nodes, self.features, self.hidden, self.out, edges)
    }
}

/// What the stream has delivered so far.
struct Received {
    cost: GraphCost,
    reservation: Reservation,
    x: Vec<f32>,
    features: usize,
    nodes: usize,
    rows_done: usize,
    source: Vec<i64>,
    target: Vec<i64>,
    batch: Vec<i64>,
}

impl Received {
    fn new(
        h: &pb::GraphHeader,
        features: usize,
        cost: GraphCost,
        budget: &Arc<MemoryBudget>,
    ) -> Result<Received> {
        if h.features as usize != features {
            return Err(invalid!(
                "header features is {}, expected {features} (the model's input width)",
                h.features
            ));
        }
        if h.nodes == 0 || h.nodes.saturating_mul(features as u64) > MAX_VALUES {
            return Err(Error::ResourceExhausted(format!(
                "header nodes is {}; expected 1 to {} nodes of {features} features",
                h.nodes,
                MAX_VALUES / features.max(1) as u64
            )));
        }
        let reservation = budget.admit(&GraphCost::what(h.nodes, 0), cost.bytes(h.nodes, 0))?;
        Ok(Received {
            cost,
            reservation,
            x: Vec::with_capacity(h.nodes as usize * features),
            features,
            nodes: h.nodes as usize,
            rows_done: 0,
            source: Vec::new(),
            target: Vec::new(),
            batch: Vec::new(),
        })
    }

    fn add(&mut self, msg: Msg) -> Result<()> {
        match msg {
            Msg::Header(_) => Err(invalid!(
                "header sent twice; send it once, before the chunks"
            )),
            Msg::Nodes(c) => {
                if c.first_row as usize != self.rows_done {
                    return Err(invalid!(
                        "node chunk starts at row {}, expected {} (chunks in order, no gaps)",
                        c.first_row,
                        self.rows_done
                    ));
                }
                let t = c
                    .x
                    .as_ref()
                    .ok_or_else(|| invalid!("node chunk at row {} has no x tensor", c.first_row))?;
                let (shape, values) = tensor::to_f32(t)?;
                let rows = match shape[..] {
                    [rows, f] if f == self.features && rows >= 1 => rows,
                    _ => {
                        return Err(invalid!(
                            "node chunk at row {} has shape {shape:?}, expected [rows, {}] FLOAT32",
                            c.first_row,
                            self.features
                        ))
                    }
                };
                if self.rows_done + rows > self.nodes {
                    return Err(invalid!(
                        "node chunks exceed the header's {} nodes (rows {}..{})",
                        self.nodes,
                        self.rows_done,
                        self.rows_done + rows
                    ));
                }
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(invalid!(
                        "x holds {} at row {}, expected finite values",
                        values[i],
                        self.rows_done + i / self.features
                    ));
                }
                self.x.extend_from_slice(&values);
                self.rows_done += rows;
                Ok(())
            }
            Msg::Edges(e) => {
                if e.source.len() != e.target.len() {
                    return Err(invalid!(
                        "edge chunk has {} sources and {} targets, expected equal counts",
                        e.source.len(),
                        e.target.len()
                    ));
                }
                if !self.batch.is_empty() {
                    return Err(invalid!("a stream holds either edges or set ids, not both"));
                }
                let edges = self.source.len() + e.source.len();
                if edges > MAX_EDGES {
                    return Err(Error::ResourceExhausted(format!(
                        "more than {MAX_EDGES} edges in one stream"
                    )));
                }
                let (nodes, edges) = (self.nodes as u64, edges as u64);
                self.reservation.grow_to(
                    &GraphCost::what(nodes, edges),
                    self.cost.bytes(nodes, edges),
                )?;
                self.source.extend_from_slice(&e.source);
                self.target.extend_from_slice(&e.target);
                Ok(())
            }
            Msg::Sets(s) => {
                if !self.source.is_empty() {
                    return Err(invalid!("a stream holds either edges or set ids, not both"));
                }
                if s.first_row as usize != self.batch.len() {
                    return Err(invalid!(
                        "set chunk starts at row {}, expected {} (chunks in order, no gaps)",
                        s.first_row,
                        self.batch.len()
                    ));
                }
                if self.batch.len() + s.batch.len() > self.nodes {
                    return Err(invalid!("set ids exceed the header's {} nodes", self.nodes));
                }
                self.batch.extend_from_slice(&s.batch);
                Ok(())
            }
        }
    }

    /// The model input once the stream has ended, and the memory reserved for it.
    fn finish(self) -> Result<(GraphInput, Reservation)> {
        if self.rows_done != self.nodes {
            return Err(invalid!(
                "the stream ended after {} of the header's {} node rows",
                self.rows_done,
                self.nodes
            ));
        }
        let csr = if !self.batch.is_empty() {
            if self.batch.len() != self.nodes {
                return Err(invalid!(
                    "the stream gave {} set ids for {} nodes, expected one per node",
                    self.batch.len(),
                    self.nodes
                ));
            }
            heavy(8 * self.batch.len(), || Csr::from_batch(&self.batch))?
        } else {
            heavy(16 * self.source.len(), || {
                Csr::from_edge_index(&self.source, &self.target, self.nodes)
            })?
        };
        let input = GraphInput {
            x: self.x,
            features: self.features,
            csr,
        };
        Ok((input, self.reservation))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = std::result::Result<pb::GraphChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Graph for GraphService {
    type AggregateStream = ChunkStream;

    async fn aggregate(
        &self,
        request: Request<Streaming<pb::GraphRequest>>,
    ) -> std::result::Result<Response<Self::AggregateStream>, Status> {
        let caller = self.state.clients.caller(&request);
        let mut inbound = request.into_inner();
        let idle = self.state.stream_idle;
        let first = next_message(&mut inbound, idle).await?;
        let header = match first.and_then(|m| m.msg) {
            Some(Msg::Header(h)) => h,
            _ => return Err(invalid!("the stream must start with a GraphHeader").into()),
        };
        let loaded = self.state.loaded()?;
        let model = loaded.find_family(&header.model, Family::Graph)?;
        let info = model.info();
        let features: usize = info.require("in_features")?;
        let out: usize = info.require("out_features")?;
        let hidden: usize = info.require("hidden")?;
        let priority = validate::priority(header.priority)?;
        let options = self.state.clients.job_options(&caller, priority, None)?;
        let name = info.name.clone();
        let guard = RequestGuard::new(&self.state.metrics, info, "inferd");
        let span = tracing::info_span!("graph_aggregate", model = %name, nodes = header.nodes);
        let result = async {
            let cost = GraphCost {
                features: features as u64,
                hidden: hidden as u64,
                out: out as u64,
            };
            let mut received = Received::new(&header, features, cost, &self.state.budget)?;
            while let Some(m) = next_message(&mut inbound, idle).await? {
                let msg = m
                    .msg
                    .ok_or_else(|| invalid!("empty request message; expected a chunk"))?;
                received.add(msg)?;
            }
            let (input, _reservation) = received.finish()?;
            let mut rx = loaded
                .scheduler
                .submit(&model, vec![Input::Graph(input)], options)?;
            let done = rx.remove(0).await.map_err(|_| {
                Error::Unavailable("the device worker dropped the request".into())
            })??;
            let Output::Graph(y) = done.output else {
                return Err(Status::from(Error::Internal(
                    "a graph model gave another family's output".into(),
                )));
            };
            Ok::<_, Status>(y)
        }
        .instrument(span)
        .await;
        let y = guard.finish(result)?;
        let rows_per_chunk = match header.rows_per_chunk {
            0 => (CHUNK_BYTES / (4 * out.max(1))).max(1),
            r => r as usize,
        };
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for (i, rows) in y.chunks(rows_per_chunk * out).enumerate() {
                let chunk = pb::GraphChunk {
                    first_row: (i * rows_per_chunk) as u64,
                    y: Some(tensor::encode_f32(&[rows.len() / out, out], rows)),
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
