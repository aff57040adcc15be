//! The bounded inference service: a fixed pool of worker threads behind a fixed-size queue.
//!
//! `submit` never blocks, so a capture or scheduling thread can call it: when the queue is
//! full the request either replaces the oldest queued clip of the same camera (that one is
//! answered `Replaced`) or is refused with `Busy`, by configuration, and both are counted.
//! Each request carries its own reply channel, so every caller gets exactly its own result.
//! Memory is bounded by `queue + workers` clips in flight.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::model::XclipModel;
use super::preprocess::{ClipStats, Preprocessor};
use super::prompts::{Classification, PromptSet};
use super::XclipError;
pub use crate::config::WhenFull;
use crate::inference::onnx::GraphThreads;
use crate::ring::FrameBatch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceConfig {
    pub workers: usize,
    pub queue: usize,
    pub when_full: WhenFull,
    pub top_k: usize,
    /// Threads each worker's graph runs on (`GraphThreads`).
    pub threads: usize,
}

impl ServiceConfig {
    /// The service as `[xclip]` configures it.
    pub fn from_section(x: &crate::config::XclipSection) -> Self {
        Self {
            workers: x.workers as usize,
            queue: x.queue as usize,
            when_full: x.when_full,
            top_k: x.top_k as usize,
            threads: x.threads as usize,
        }
    }
}

/// A clip to classify: JPEG frames of one camera, oldest first.
#[derive(Debug, Clone)]
pub struct ClipRequest {
    pub camera: String,
    pub frames: FrameBatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    pub camera: String,
    #[serde(flatten)]
    pub classification: Classification,
    pub frames: ClipStats,
    /// Time from submission to the start of work.
    pub queued_ms: f64,
    /// Preprocessing plus inference.
    pub latency_ms: f64,
    pub model: String,
    pub placeholder_model: bool,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct ServiceStats {
    pub submitted: u64,
    pub completed: u64,
    pub failed: u64,
    pub refused: u64,
    pub replaced: u64,
    pub queued: usize,
}

type Reply = Result<ClipResult, XclipError>;

struct Job {
    req: ClipRequest,
    reply: SyncSender<Reply>,
    enqueued: Instant,
}

struct Queue {
    jobs: VecDeque<Job>,
    stop: bool,
}

struct Shared {
    model: Arc<XclipModel>,
    prompts: Arc<PromptSet>,
    text_embeds: Arc<Vec<f32>>,
    cfg: ServiceConfig,
    queue: Mutex<Queue>,
    ready: Condvar,
    submitted: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    replaced: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pending result.
pub struct Ticket {
    rx: Receiver<Reply>,
}

impl Ticket {
    pub fn wait(self) -> Reply {
        self.rx.recv().unwrap_or(Err(XclipError::Stopped))
    }

    pub fn wait_timeout(self, d: Duration) -> Reply {
        self.rx.recv_timeout(d).unwrap_or(Err(XclipError::Stopped))
    }

    /// The result if it is there, without waiting.
    pub fn try_wait(&self) -> Option<Reply> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(std::sync::mpsc::TryRecvError::Empty) => None,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => Some(Err(XclipError::Stopped)),
        }
    }
}

pub struct XclipService {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl XclipService {
    pub fn start(
        model: Arc<XclipModel>,
        prompts: Arc<PromptSet>,
        text_embeds: Arc<Vec<f32>>,
        cfg: ServiceConfig,
    ) -> Result<Self, XclipError> {
        if text_embeds.len() != prompts.len() * model.manifest.embed_dim {
            return Err(XclipError::BadRequest(format!(
                "{} text embedding values for {} prompts of {} dimensions",
                text_embeds.len(),
                prompts.len(),
                model.manifest.embed_dim
            )));
        }
        let shared = Arc::new(Shared {
            model,
            prompts,
            text_embeds,
            cfg,
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(cfg.queue),
                stop: false,
            }),
            ready: Condvar::new(),
            submitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
        });
        let mut workers = Vec::with_capacity(cfg.workers);
        for i in 0..cfg.workers.max(1) {
            let pre = Preprocessor::new(shared.model.manifest.preprocess.clone())?;
            let s = shared.clone();
            let h = std::thread::Builder::new()
                .name(format!("xclip-{i}"))
                .spawn(move || worker(&s, pre))
                .map_err(|e| XclipError::Run(format!("cannot start worker: {e}")))?;
            workers.push(h);
        }
        Ok(Self { shared, workers })
    }

    pub fn model(&self) -> &XclipModel {
        &self.shared.model
    }

    /// Queue a clip without blocking.
    pub fn submit(&self, req: ClipRequest) -> Result<Ticket, XclipError> {
        let s = &self.shared;
        let (tx, rx) = sync_channel(1);
        let mut q = s.lock();
        if q.stop {
            return Err(XclipError::Stopped);
        }
        if q.jobs.len() >= s.cfg.queue {
            let same_camera = q.jobs.iter().position(|j| j.req.camera == req.camera);
            match (s.cfg.when_full, same_camera) {
                (WhenFull::ReplaceOldest, Some(i)) => {
                    if let Some(old) = q.jobs.remove(i) {
                        let _ = old.reply.try_send(Err(XclipError::Replaced));
                    }
                    s.replaced.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    s.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(XclipError::Busy);
                }
            }
        }
        q.jobs.push_back(Job {
            req,
            reply: tx,
            enqueued: Instant::now(),
        });
        s.submitted.fetch_add(1, Ordering::Relaxed);
        drop(q);
        s.ready.notify_one();
        Ok(Ticket { rx })
    }

    /// Submit and wait for the result.
    pub fn classify(&self, req: ClipRequest) -> Reply {
        self.submit(req)?.wait()
    }

    pub fn stats(&self) -> ServiceStats {
        let s = &self.shared;
        ServiceStats {
            submitted: s.submitted.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            refused: s.refused.load(Ordering::Relaxed),
            replaced: s.replaced.load(Ordering::Relaxed),
            queued: s.lock().jobs.len(),
        }
    }

    /// Stop the workers; queued clips are answered `Stopped`.
    pub fn stop(&mut self) {
        {
            let mut q = self.shared.lock();
            q.stop = true;
            for j in q.jobs.drain(..) {
                let _ = j.reply.try_send(Err(XclipError::Stopped));
            }
        }
        self.shared.ready.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for XclipService {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker(s: &Shared, mut pre: Preprocessor) {
    let threads = GraphThreads::new(s.cfg.threads);
    let mut pixels: Vec<f32> = Vec::new();
    loop {
        let job = {
            let mut q = s.lock();
            loop {
                if q.stop {
                    return;
                }
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q = s.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let queued_ms = job.enqueued.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let result = run_one(s, &threads, &mut pre, &mut pixels, &job.req);
        let reply = result.map(|(classification, frames)| ClipResult {
            camera: job.req.camera.clone(),
            classification,
            frames,
            queued_ms,
            latency_ms: t0.elapsed().as_secs_f64() * 1e3,
            model: s.model.info.name.clone(),
            placeholder_model: s.model.info.placeholder,
        });
        match &reply {
            Ok(_) => s.completed.fetch_add(1, Ordering::Relaxed),
            Err(_) => s.failed.fetch_add(1, Ordering::Relaxed),
        };
        let _ = job.reply.try_send(reply);
    }
}

fn run_one(
    s: &Shared,
    threads: &GraphThreads,
    pre: &mut Preprocessor,
    pixels: &mut Vec<f32>,
    req: &ClipRequest,
) -> Result<(Classification, ClipStats), XclipError> {
    if req.frames.is_empty() {
        return Err(XclipError::BadRequest("clip has no frames".into()));
    }
    let t = s.model.manifest.num_frames;
    let stats = pre.clip(req.frames.iter().map(|(_, b)| b), t, pixels)?;
    // Only the graph on the pool: its helpers spin while it runs, and decoding the JPEGs
    // above is one thread's work.
    let logits = threads.run(|| s.model.logits(pixels, &s.text_embeds))?;
    Ok((s.prompts.classify(&logits, s.cfg.top_k), stats))
}
