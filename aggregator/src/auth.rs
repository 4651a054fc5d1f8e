//! Who may call what. TLS has already checked that the client's certificate chains to
//! our CA; here its identity SAN is read and its role checked against the service.
//! The identity then travels in the request's extensions; nothing downstream looks at
//! the message for it.

use connwatch_shared::identity::{Identity, Role};
use tonic::{Request, Status};

/// An interceptor that admits only certificates of `role`.
#[derive(Debug, Clone, Copy)]
pub struct RequireRole(pub Role);

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let id = identify(&req)?;
        if id.role != self.0 {
            let what = match self.0 {
                Role::Collector => "sending reports needs a collector certificate",
                Role::Operator => {
                    "queries need an operator certificate (issue one with `connwatch-aggregator ca issue --role operator`)"
                }
            };
            return Err(Status::permission_denied(format!(
                "this certificate belongs to {id}; {what}"
            )));
        }
        req.extensions_mut().insert(id);
        Ok(req)
    }
}

/// Reads the identity from the client certificate of a request.
pub fn identify<T>(req: &Request<T>) -> Result<Identity, Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate was presented; connwatch requires mutual TLS with a certificate from `connwatch-aggregator ca issue`",
        )
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("the client certificate chain is empty"))?;
    Identity::from_cert_der(leaf.as_ref()).map_err(|e| Status::unauthenticated(e.to_string()))
}

/// The identity an interceptor placed on the request.
pub fn caller<T>(req: &Request<T>) -> Result<Identity, Status> {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .ok_or_else(|| Status::internal("the request was not authenticated; this is a bug"))
}
