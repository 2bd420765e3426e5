use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures_util::future::{BoxFuture, FutureExt};
use herald_protocol::{Payload, Publication, StreamPosition};
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::ChannelOptions;
use crate::engine::{Engine, EngineError, HistoryPage, PublicationSink};
use herald_protocol::ClientInfo;

/// The single-node engine: streams live in this process's memory.
///
/// Each channel has a stream with an epoch (random, so a restart is visible to
/// resuming clients), a top offset and a history bounded by size and age. A stream's
/// position outlives its history for `meta_ttl`, so a quiet channel keeps its epoch
/// and subscribers resume across long silences.
pub struct MemoryEngine {
    streams: DashMap<Arc<str>, Arc<Mutex<Stream>>>,
    sink: Arc<dyn PublicationSink>,
    meta_ttl: Duration,
}

struct Stream {
    epoch: Arc<str>,
    top: u64,
    history: VecDeque<Retained>,
    touched: Instant,
}

struct Retained {
    publication: Publication,
    expires: Instant,
}

impl Stream {
    fn new() -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            history: VecDeque::new(),
            touched: Instant::now(),
        }
    }

    fn drop_expired(&mut self, now: Instant) {
        while self.history.front().is_some_and(|r| r.expires <= now) {
            self.history.pop_front();
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.to_string(),
        }
    }
}

impl MemoryEngine {
    /// An engine delivering to `sink`, keeping idle streams' positions for `meta_ttl`.
    pub fn new(sink: Arc<dyn PublicationSink>, meta_ttl: Duration) -> Self {
        MemoryEngine {
            streams: DashMap::new(),
            sink,
            meta_ttl,
        }
    }

    fn stream(&self, channel: &str) -> Arc<Mutex<Stream>> {
        if let Some(stream) = self.streams.get(channel) {
            return Arc::clone(&stream);
        }
        Arc::clone(
            &self
                .streams
                .entry(Arc::from(channel))
                .or_insert_with(|| Arc::new(Mutex::new(Stream::new()))),
        )
    }

    /// Drops expired history everywhere and forgets streams idle for longer than
    /// the meta TTL that have no subscribers here. Call it periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.streams.retain(|channel, stream| {
            let mut stream = lock(stream);
            stream.drop_expired(now);
            let idle = now.duration_since(stream.touched) > self.meta_ttl;
            !(idle && stream.history.is_empty() && !self.sink.has_subscribers(channel))
        });
    }

    /// Number of streams held.
    pub fn num_streams(&self) -> usize {
        self.streams.len()
    }
}

impl Engine for MemoryEngine {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Payload,
        info: Option<Arc<ClientInfo>>,
        options: &'a ChannelOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, EngineError>> {
        let stream = self.stream(channel);
        let mut stream = lock(&stream);
        let now = Instant::now();
        stream.touched = now;
        stream.top += 1;
        let publication = Publication {
            offset: stream.top,
            data,
            info,
        };
        // Delivering under the stream's lock keeps fan-out in offset order.
        self.sink.deliver(channel, &stream.epoch, &publication);
        if options.history_size > 0 && !options.history_ttl.is_zero() {
            stream.drop_expired(now);
            if stream.history.len() >= options.history_size {
                stream.history.pop_front();
            }
            stream.history.push_back(Retained {
                publication,
                expires: now + options.history_ttl,
            });
        }
        let position = stream.position();
        drop(stream);
        futures_util::future::ready(Ok(position)).boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        since: Option<u64>,
        limit: Option<usize>,
        _options: &'a ChannelOptions,
    ) -> BoxFuture<'a, Result<HistoryPage, EngineError>> {
        let stream = self.stream(channel);
        let mut stream = lock(&stream);
        stream.drop_expired(Instant::now());
        let after = since.unwrap_or(0);
        let publications = stream
            .history
            .iter()
            .filter(|r| r.publication.offset > after)
            .take(limit.unwrap_or(usize::MAX))
            .map(|r| r.publication.clone())
            .collect();
        let page = HistoryPage {
            publications,
            top: stream.position(),
            first_retained: stream.history.front().map(|r| r.publication.offset),
        };
        drop(stream);
        futures_util::future::ready(Ok(page)).boxed()
    }

    fn publish_join<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.sink.deliver_join(channel, info);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn publish_leave<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        self.sink.deliver_leave(channel, info);
        futures_util::future::ready(Ok(())).boxed()
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), EngineError>> {
        if let Some(stream) = self.streams.get(channel) {
            lock(&stream).history.clear();
        }
        futures_util::future::ready(Ok(())).boxed()
    }
}

/// A fresh epoch: 8 random alphanumerics.
fn new_epoch() -> Arc<str> {
    let epoch: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(8)
        .map(char::from)
        .collect();
    Arc::from(epoch)
}

fn lock(stream: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    // Each critical section leaves the stream consistent before it can panic.
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, u64)>>);

    impl PublicationSink for Recorder {
        fn deliver(&self, channel: &str, _epoch: &str, publication: &Publication) {
            self.0
                .lock()
                .unwrap()
                .push((channel.to_owned(), publication.offset));
        }
        fn deliver_join(&self, _channel: &str, _info: &ClientInfo) {}
        fn deliver_leave(&self, _channel: &str, _info: &ClientInfo) {}
        fn has_subscribers(&self, _channel: &str) -> bool {
            false
        }
    }

    fn data(n: u32) -> Payload {
        Payload::json(n.to_string().as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn offsets_increase_and_history_is_bounded_by_size() {
        let sink = Arc::new(Recorder::default());
        let engine = MemoryEngine::new(sink.clone(), Duration::from_secs(60));
        let options = ChannelOptions {
            history_size: 3,
            ..ChannelOptions::default()
        };
        for n in 1..=5 {
            let position = engine.publish("c", data(n), None, &options).await.unwrap();
            assert_eq!(position.offset, u64::from(n));
        }
        let page = engine.history("c", Some(1), None, &options).await.unwrap();
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [3, 4, 5]);
        assert_eq!(page.first_retained, Some(3));
        assert_eq!(page.top.offset, 5);
        assert_eq!(sink.0.lock().unwrap().len(), 5);
        let limited = engine.history("c", None, Some(2), &options).await.unwrap();
        assert_eq!(limited.publications.len(), 2);
    }

    #[tokio::test]
    async fn history_expires_but_the_position_stays() {
        let engine = MemoryEngine::new(Arc::new(Recorder::default()), Duration::from_secs(60));
        let options = ChannelOptions {
            history_ttl: Duration::from_millis(20),
            ..ChannelOptions::default()
        };
        let first = engine.publish("c", data(1), None, &options).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        engine.sweep();
        let page = engine.history("c", None, None, &options).await.unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.top, first);
    }

    #[tokio::test]
    async fn sweep_forgets_idle_streams_so_the_epoch_changes() {
        let engine = MemoryEngine::new(Arc::new(Recorder::default()), Duration::ZERO);
        let options = ChannelOptions {
            history_size: 0,
            ..ChannelOptions::default()
        };
        let before = engine.publish("c", data(1), None, &options).await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        engine.sweep();
        assert_eq!(engine.num_streams(), 0);
        let after = engine.history("c", None, None, &options).await.unwrap().top;
        assert_ne!(before.epoch, after.epoch);
        assert_eq!(after.offset, 0);
    }
}
