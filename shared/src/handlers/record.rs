use crate::api::{EventOutcome, RecordResponse};
use lambda_http::{Body, Request, Response, http::StatusCode};

use crate::auth::Scope;
use crate::domain::dimensions::{cardinality_cap, dimension_pages};
use crate::domain::event::{check_unique_event_ids, parse_record_body, parse_sequence_headers};
use crate::error::ApiError;
use crate::http::{
    App, authenticate, header, json_body, owned_proxy, path_param, respond, success,
};
use crate::storage::{Destination, EventStatus, Sequence, SequencedOutcome, body_fingerprint};

/// `POST /proxy/metrics/{proxyId}/record`
pub async fn record_metrics(app: &App, request: Request) -> Response<Body> {
    respond(&request, async {
        let caller = authenticate(app, &request).await?;
        caller.require_scope(Scope::MetricsWrite)?;
        let proxy_id = path_param(&request, "proxyId")?;
        crate::domain::validate_proxy_id(&proxy_id)?;
        caller.require_proxy(&proxy_id)?;
        // Validate before the ownership read: bad input costs no storage call.
        let now = app.clock.now();
        let sequence = parse_sequence_headers(
            header(&request, "producer-id")?.as_deref(),
            header(&request, "producer-sequence")?.as_deref(),
        )?
        .map(|(producer_id, sequence)| Sequence {
            producer_id,
            sequence,
            // Of the bytes as sent: a retry sends the same bytes, while the
            // parsed events differ (ids and timestamps the server fills in).
            fingerprint: body_fingerprint(request.body().as_ref()),
        });
        let idempotency_key = header(&request, "idempotency-key")?;
        if sequence.is_some() && idempotency_key.is_some() {
            return Err(ApiError::invalid(
                "A sequenced batch is made idempotent by Producer-Sequence; send no Idempotency-Key with it.",
            ));
        }
        let mut body = parse_record_body(json_body(&request)?, idempotency_key.as_deref(), now)?;
        if sequence.is_some() {
            check_unique_event_ids(&body.events)?;
        }
        // The caller's own limit is taken before the ownership read, the
        // proxy's only after it: a request naming someone else's proxy (404)
        // never spends that proxy's bucket.
        let proxy = owned_proxy(app, &caller, &proxy_id).await?;
        app.record_limiter
            .take(&proxy.proxy_id, now)
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
        // Values past the owner's cardinality cap go to `__other__` (no
        // call at all when the events give no dimension, or known ones).
        app.store
            .admit_dimensions(
                &proxy.proxy_id,
                cardinality_cap(proxy.tier),
                &mut body.events,
            )
            .await?;
        let to = Destination {
            proxy_id: &proxy.proxy_id,
            retention_days: proxy.tier.raw_retention_days(),
            marked_at_ms: proxy.marked_at_ms,
            dimension_pages: dimension_pages(proxy.tier),
            dims_since_ms: proxy.dims_since_ms,
        };
        let (statuses, write_units) = match &sequence {
            Some(sequence) => {
                match app
                    .store
                    .record_sequenced(to, sequence, &body.events, now)
                    .await?
                {
                    SequencedOutcome::Recorded { write_units } => {
                        (vec![EventStatus::Recorded; body.events.len()], write_units)
                    }
                    SequencedOutcome::Duplicate => {
                        (vec![EventStatus::Duplicate; body.events.len()], 0.0)
                    }
                    SequencedOutcome::Gap { expected } => {
                        return Err(ApiError::SequenceGap { expected });
                    }
                    SequencedOutcome::Conflict => {
                        return Err(ApiError::SequenceConflict {
                            sequence: sequence.sequence,
                        });
                    }
                }
            }
            None => {
                let outcome = app.store.record_events(to, &body.events, now).await?;
                (outcome.statuses, outcome.write_units)
            }
        };
        tracing::info!(
            proxy_id = %proxy.proxy_id,
            events = body.events.len(),
            sequenced = sequence.is_some(),
            write_units,
            "recorded"
        );
        let recorded = statuses
            .iter()
            .filter(|s| **s == EventStatus::Recorded)
            .count();
        let duplicates = statuses.len() - recorded;
        let events: Vec<EventOutcome> = body
            .events
            .iter()
            .zip(&statuses)
            .map(|(e, s)| EventOutcome {
                event_id: e.event_id.clone(),
                status: s.as_str(),
            })
            .collect();
        let single = body.single.then(|| &body.events[0]);
        let response = RecordResponse {
            proxy_id: proxy.proxy_id.clone(),
            recorded,
            duplicates,
            events,
            message: if recorded == 0 {
                "All events were already recorded (duplicates)"
            } else {
                "Metrics recorded successfully"
            },
            event_type: single.map(|e| e.event_type.as_str()),
            event_id: single.map(|e| e.event_id.clone()),
        };
        let status = if recorded == 0 {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        success(app, status, &caller, &response)
    })
    .await
}
