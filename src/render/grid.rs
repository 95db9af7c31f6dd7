//! `/grid` requests: every source fetched at once, each under the limits of a single
//! source (bytes while fetching, pixels from its header), their sum of pixels under
//! `limits.max_grid_megapixels`, composed on the worker pool. The first failure is the
//! answer, with the status a single transform of that source would get.

use std::sync::Arc;
use std::time::Instant;

use super::origins::Fetched;
use super::{encoded_output, etag_of, transform_error, Output, Render};
use crate::config::Tenant;
use crate::error::Error;
use crate::metrics;
use crate::options;
use crate::transform;

impl Render {
    pub(super) async fn grid(
        &self,
        tenant_id: &str,
        canonical: &str,
        origin_us: &mut Option<u64>,
    ) -> Result<(Output, String, Arc<Tenant>), Error> {
        let rt = self.tenants.load().get(tenant_id).cloned().ok_or(Error::UnknownTenant)?;
        let admitted = self.admit(&rt)?;
        let req = options::parse_grid_canonical(canonical)?;
        let fetch_timer = metrics::render_span("fetch").start_timer();
        let fetches = req.sources.iter().map(|s| rt.origins.fetch(&s.origin, &s.key, &rt.tenant.limits));
        let fetched: Vec<Fetched> = futures::future::try_join_all(fetches).await?;
        *origin_us = Some((fetch_timer.stop_and_record() * 1e6) as u64);
        // every source's validator, length-prefixed: a changed source is a new ETag
        let mut validators = String::new();
        for f in &fetched {
            let v = f.etag.as_deref().unwrap_or("");
            validators.push_str(&format!("{}:{v}", v.len()));
        }
        let etag = etag_of(tenant_id, canonical, Some(&validators));
        let bodies: Vec<bytes::Bytes> = fetched.into_iter().map(|f| f.bytes).collect();
        let timeout = rt.tenant.limits.render_timeout;
        let settings =
            transform::Settings { deadline: Some(Instant::now() + timeout), ..rt.tenant.transform_settings() };
        let max_total = rt.tenant.limits.max_grid_pixels;
        let encoded = self
            .on_worker("grid", admitted, timeout, move || {
                let inputs: Vec<&[u8]> = bodies.iter().map(|b| b.as_ref()).collect();
                transform::grid(&inputs, &req, &settings, max_total).map_err(transform_error)
            })
            .await?;
        Ok((encoded_output(encoded), etag, rt.tenant.clone()))
    }
}
