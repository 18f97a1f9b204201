//! Events across daemons sharing a PostgreSQL store: every daemon's subscribers see the events
//! of every unit, whichever daemon holds it (`LISTEN`/`NOTIFY`).
//!
//! One connection per daemon, of its own (not the history's, nor the lease keeper's: a burst
//! of events never delays a renewal or a fence check), made with `tokio-postgres` so one task
//! both sends and receives. It `LISTEN`s on [`CHANNEL`]; the event bus queues this daemon's
//! events of units (bounded, never waiting: `EventBus::publish_in`), and the relay sends them
//! in that order, one `pg_notify` each, what is queued together in one statement (up to
//! [`BATCH`]: an apply's burst of step events costs a few round trips, not one each). PostgreSQL delivers one session's notifications in the
//! order they were sent, so another daemon gets them in order, once each. An event whose JSON
//! is over [`INLINE_MAX`] bytes (a NOTIFY payload must be under 8000) is written to the
//! `fleet_events` table and only its id is notified; a receiver reads it from there, in its
//! turn, so the order holds. Rows older than an hour are deleted by the daemon that writes the
//! next large one. Events are redacted where they entered capstan; the relay sends their JSON
//! as it is.
//!
//! A receiver drops its own events (`origin` is its id: they are in its stream already) and
//! publishes the others' on its bus (`EventBus::relayed`), to its subscribers only — never to
//! a unit's notifier: notifications are the holder's to send.
//!
//! A lost connection is made again with a doubling delay (0.2 s to 5 s), forever while the
//! daemon runs (one attempt at a time); the events being sent when it was lost are sent again
//! on the new one (twice, when the loss came after the server took them). What other daemons notified while this one was not listening is not seen
//! (their subscribers saw it, and the history keeps what happened).

use super::events::EventBus;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

/// The notification channel.
pub const CHANNEL: &str = "capstan_events";
/// The largest event sent in the notification itself.
const INLINE_MAX: usize = 7000;
/// How many events may wait to be sent; more are dropped (and counted) rather than waited for.
const QUEUE: usize = 10_000;
/// How many queued events go in one round trip.
const BATCH: usize = 100;
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// Starts relaying the events of `bus` to the daemons sharing the store `url`, and theirs to
/// `bus`, as the daemon `origin`; ends once `closed` resolves, after sending what is queued.
pub fn start(
    url: &str,
    origin: &str,
    bus: Arc<EventBus>,
    closed: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let shown = crate::redact::url(url);
    // TLS as the store's other connections make it (`sslmode`, `sslrootcert`).
    let (url, tls) = crate::pg::Tls::from_url(url, &shown)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        anyhow::Error::new(e).context(format!("--store {shown} is not a PostgreSQL URL"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    let (tx, outbox) = mpsc::channel(QUEUE);
    bus.relay_to(origin.to_string(), tx);
    let relay = Relay { config, tls, shown, origin: origin.to_string(), bus };
    Ok(tokio::spawn(relay.run(outbox, closed)))
}

struct Relay {
    config: tokio_postgres::Config,
    tls: crate::pg::Tls,
    shown: String,
    origin: String,
    bus: Arc<EventBus>,
}

/// Why a connection's session ended.
enum Ended {
    Closed,
    /// `listened`: the connection was made and listened on before it was lost.
    Lost {
        why: String,
        listened: bool,
    },
}

fn lost(why: impl std::fmt::Display, listened: bool) -> Ended {
    Ended::Lost { why: why.to_string(), listened }
}

impl Relay {
    async fn run(self, mut outbox: mpsc::Receiver<String>, closed: impl Future<Output = ()> + Send) {
        let mut closed = std::pin::pin!(closed);
        let mut retry = FIRST_RETRY;
        // The events being sent when a connection was lost: sent first on the next.
        let mut pending: Vec<String> = Vec::new();
        loop {
            match self.session(&mut outbox, &mut pending, &mut closed).await {
                Ended::Closed => return,
                Ended::Lost { why, listened } => {
                    // A session that ran is not a failure to connect: the delay starts over.
                    if listened {
                        retry = FIRST_RETRY;
                    }
                    tracing::warn!(store = %self.shown, "the event relay's connection was lost ({why}); connecting again in {} ms", retry.as_millis());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = &mut closed => return,
            }
            retry = (retry * 2).min(LAST_RETRY);
        }
    }

    /// One connection: listen, then send what is queued and hand over what arrives, until the
    /// connection is lost or the daemon stops.
    async fn session(
        &self,
        outbox: &mut mpsc::Receiver<String>,
        pending: &mut Vec<String>,
        closed: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Ended {
        let connected = tokio::select! {
            c = self.tls.connect_async(&self.config) => c,
            _ = closed.as_mut() => return Ended::Closed,
        };
        let (client, mut messages) = match connected {
            Ok(c) => c,
            Err(e) => return lost(e, false),
        };
        // The connection is driven by a task of its own, which hands notifications over.
        let (incoming_tx, mut incoming) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if incoming_tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!("the event relay's connection ended: {e}");
                        return;
                    }
                }
            }
        });
        let ended = self.serve(&client, &mut incoming, outbox, pending, closed).await;
        drop(client);
        driver.abort();
        ended
    }

    async fn serve(
        &self,
        client: &Client,
        incoming: &mut mpsc::UnboundedReceiver<String>,
        outbox: &mut mpsc::Receiver<String>,
        pending: &mut Vec<String>,
        closed: &mut std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
    ) -> Ended {
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            return lost(e, false);
        }
        tracing::info!(store = %self.shown, "relaying events to and from the daemons sharing the store");
        loop {
            if let Err(e) = self.send(client, pending).await {
                return lost(e, true);
            }
            tokio::select! {
                biased;
                n = incoming.recv() => match n {
                    Some(payload) => {
                        if let Err(e) = self.receive(client, &payload).await {
                            return lost(e, true);
                        }
                    }
                    None => return lost("the server closed it", true),
                },
                e = outbox.recv() => match e {
                    // What else is queued goes with it (up to `BATCH`).
                    Some(text) => {
                        pending.push(text);
                        while pending.len() < BATCH {
                            let Ok(text) = outbox.try_recv() else { break };
                            pending.push(text);
                        }
                    }
                    None => return Ended::Closed,
                },
                _ = closed.as_mut() => {
                    // The daemon has stopped: its last events go out (bounded by the queue).
                    while let Ok(text) = outbox.try_recv() {
                        pending.push(text);
                    }
                    let _ = self.send(client, pending).await;
                    return Ended::Closed;
                }
            }
        }
    }

    /// Notifies the `pending` events in order, taking each out once sent: the small ones in
    /// runs of up to `BATCH` per round trip, a large one (over [`INLINE_MAX`]) alone, by its
    /// row's id. What is left on an error is sent on the next connection.
    async fn send(&self, client: &Client, pending: &mut Vec<String>) -> Result<(), tokio_postgres::Error> {
        while !pending.is_empty() {
            let small = pending.iter().take(BATCH).take_while(|t| t.len() <= INLINE_MAX).count();
            if small > 0 {
                crate::pg::count_call();
                // A function scan yields the array in order: notified in that order.
                client
                    .execute("SELECT pg_notify($1, x) FROM unnest($2::text[]) AS x", &[&CHANNEL, &&pending[..small]])
                    .await?;
                pending.drain(..small);
            } else {
                self.send_large(client, &pending[0]).await?;
                pending.remove(0);
            }
        }
        Ok(())
    }

    /// Notifies one event too large for a notification: stored, and its row's id notified.
    async fn send_large(&self, client: &Client, text: &str) -> Result<(), tokio_postgres::Error> {
        crate::pg::count_call();
        client
            .execute(
                "WITH e AS (INSERT INTO fleet_events (origin, body) VALUES ($1, $2) RETURNING id)
                 SELECT pg_notify($3, json_build_object('origin', $1::text, 'ref', (SELECT id FROM e))::text)",
                &[&self.origin, &text, &CHANNEL],
            )
            .await?;
        crate::pg::count_call();
        client.execute("DELETE FROM fleet_events WHERE at < now() - interval '1 hour'", &[]).await?;
        Ok(())
    }

    /// Hands an event another daemon notified to this daemon's bus (reading it from
    /// `fleet_events` when only its id came).
    async fn receive(&self, client: &Client, payload: &str) -> Result<(), tokio_postgres::Error> {
        #[derive(serde::Deserialize)]
        struct Head {
            origin: Option<String>,
            #[serde(rename = "ref")]
            reference: Option<i64>,
        }
        let Ok(head) = serde_json::from_str::<Head>(payload) else {
            tracing::warn!("the event relay ignored a notification that is not an event");
            return Ok(());
        };
        if head.origin.as_deref() == Some(self.origin.as_str()) {
            return Ok(());
        }
        let stored;
        let text = match head.reference {
            None => payload,
            Some(id) => {
                crate::pg::count_call();
                let row = client.query_opt("SELECT body FROM fleet_events WHERE id = $1", &[&id]).await?;
                let Some(row) = row else {
                    tracing::warn!("the event relay found no stored event {id} (deleted as older than an hour)");
                    return Ok(());
                };
                stored = row.get::<_, String>(0);
                stored.as_str()
            }
        };
        if let Err(e) = self.bus.relayed(text) {
            tracing::warn!("the event relay ignored an event it cannot read: {e}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::events::Event;

    fn closed(rx: tokio::sync::watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = rx;
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Over a real PostgreSQL, two relays on one store (two daemons): what one publishes for a
    /// unit reaches the other's stream in order, once each — small ones sent in batches, an
    /// event too large for a notification (through `fleet_events`) among them — and its own
    /// stream once, not again through the relay.
    #[test]
    fn events_reach_the_other_daemon_in_order_once_large_ones_through_the_table() {
        let url = crate::daemon::lease::tests::server_url();
        let _store = crate::daemon::store::Store::open_at(Some(&url), &std::env::temp_dir()).unwrap(); // migrates
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let (a, b) = (Arc::new(EventBus::default()), Arc::new(EventBus::default()));
            let (ida, idb) = (crate::daemon::lease::daemon_id(), crate::daemon::lease::daemon_id());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let ra = start(&url, &ida, a.clone(), closed(stopped.clone())).unwrap();
            let rb = start(&url, &idb, b.clone(), closed(stopped.clone())).unwrap();
            let (_, mut rx) = b.subscribe(None);
            // Both listen once a probe gets through (bounded).
            let unit = format!("relay-test-{ida}");
            let mut probes = 0;
            loop {
                probes += 1;
                assert!(probes < 100, "no probe reached the other daemon in 10 s");
                a.publish_in(Some("probe"), Event::FetchFailed { message: ida.clone() });
                if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                    && e.unit.as_deref() == Some("probe")
                {
                    break;
                }
            }
            // Small ones (sent in runs, one statement each), a large one between them.
            let large = crate::redact::Redactor::default().redact(&"x".repeat(20_000));
            let mut sent: Vec<Event> = (0..150).map(|i| Event::Converged { sha: format!("{i}") }).collect();
            sent.insert(
                75,
                Event::StepFailed { sha: "large".into(), step: "s".into(), name: "n".into(), message: large },
            );
            let want: Vec<String> =
                sent.iter().map(|e| serde_json::to_value(e).unwrap()["sha"].as_str().unwrap().to_string()).collect();
            for e in sent {
                a.publish_in(Some(&unit), e);
            }
            let mut got = Vec::new();
            while got.len() < want.len() {
                let e = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("relayed").unwrap();
                if e.unit.as_deref() == Some(unit.as_str()) {
                    got.push(e);
                }
            }
            let shas: Vec<String> =
                got.iter().map(|e| serde_json::to_value(e).unwrap()["sha"].as_str().unwrap().to_string()).collect();
            assert_eq!(shas, want, "in order");
            assert!(got.iter().all(|e| e.origin.as_deref() == Some(ida.as_str())), "each names its origin");
            match &got[75].event {
                Event::StepFailed { message, .. } => assert_eq!(message.len(), 20_000),
                other => panic!("{other:?}"),
            }
            // Nothing more: not twice, and not back into the sender's own stream.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let more: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
                .filter(|e| e.unit.as_deref() == Some(unit.as_str()))
                .collect();
            assert!(more.is_empty(), "{more:?}");
            let own = a.recent().iter().filter(|e| e.unit.as_deref() == Some(unit.as_str())).count();
            assert_eq!(own, want.len(), "the sender's stream has its own events once");
            stop.send_replace(true);
            for r in [ra, rb] {
                tokio::time::timeout(Duration::from_secs(5), r).await.expect("the relay stops").unwrap();
            }
        });
    }
}
