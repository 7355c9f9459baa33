//! The fleet's alarm outputs: the agent's ([`defender_agent::alarm::Alarms`]: the log, always;
//! JSON-lines files; commands; MQTT topics, published on the fleet's own broker connection)
//! plus the fleet's webhooks ([`crate::webhook`]).
//!
//! Only committed events reach it: the store's commit hook ([`crate::store::Store::on_commit`])
//! hands each recorded report's events to [`Dispatcher::queue`] (bounded; when full, events are
//! not alarmed — they are in the store — and that is logged once per episode). A duplicate
//! report records nothing, so it never alarms twice. Events of behaviors with
//! `suppressAlerts: true` are stored and not alarmed (spec: detect.md §6.4).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use defender_agent::alarm::{Alarms, MqttAlarm, Output};
use defender_agent::detect::ViolationEvent;
use rumqttc::QoS;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::webhook::{self, Webhook};

/// Batches of committed events waiting for the outputs at most.
pub const QUEUE_CAPACITY: usize = 1024;

/// The sending side, cheap to clone into the commit hook.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Vec<ViolationEvent>>,
    full_logged: Arc<AtomicBool>,
}

impl Dispatcher {
    /// Starts the outputs (inside a tokio runtime): the agent's `outputs` (MQTT ones publish on
    /// `client`), and `webhooks`. A webhook that cannot start (e.g. an unreadable `ca_file`) is
    /// an error.
    pub fn start(
        outputs: &[Output],
        webhooks: &[webhook::Settings],
        client: rumqttc::AsyncClient,
    ) -> Result<Dispatcher, String> {
        let hooks = webhooks
            .iter()
            .map(|w| Webhook::start(w).map_err(|e| format!("webhook {}: {e}", w.url)))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let alarms = Alarms::new(outputs, None);
        tokio::spawn(run(alarms, hooks, client, rx));
        Ok(Dispatcher {
            tx,
            full_logged: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Queues one report's committed events; never waits.
    pub fn queue(&self, events: &[ViolationEvent]) {
        if events.is_empty() {
            return;
        }
        match self.tx.try_send(events.to_vec()) {
            Ok(()) => self.full_logged.store(false, Ordering::Relaxed),
            Err(_) => {
                if !self.full_logged.swap(true, Ordering::Relaxed) {
                    warn!("Alarm outputs are behind; events are not alarmed until they catch up (they are in the store).");
                }
            }
        }
    }
}

fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Publishes without waiting: what the connection cannot take now is kept (bounded) for later.
fn publish(client: &rumqttc::AsyncClient, alarms: &mut Alarms, list: Vec<MqttAlarm>) {
    for a in list {
        if client
            .try_publish(a.topic.as_str(), qos(a.qos), false, a.payload.clone())
            .is_err()
        {
            alarms.keep(a);
        }
    }
}

async fn run(
    mut alarms: Alarms,
    mut hooks: Vec<Webhook>,
    client: rumqttc::AsyncClient,
    mut rx: mpsc::Receiver<Vec<ViolationEvent>>,
) {
    while let Some(events) = rx.recv().await {
        let pending = alarms.take_pending();
        publish(&client, &mut alarms, pending);
        for e in &events {
            if e.behavior.suppress_alerts == Some(true) {
                debug!(violation_id = %e.violation_id, "Suppressed alert: stored, not alarmed.");
                continue;
            }
            let mqtt = alarms.emit(e);
            publish(&client, &mut alarms, mqtt);
            if !hooks.is_empty() {
                match serde_json::to_vec(e) {
                    Ok(json) => hooks.iter_mut().for_each(|h| h.send(&json)),
                    Err(err) => warn!(error = %err, "Cannot encode a violation event."),
                }
            }
        }
    }
}
