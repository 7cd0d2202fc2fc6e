//! Authentication after the startup message: trust, cleartext password, md5, SCRAM-SHA-256.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message as Backend;
use postgres_protocol::message::frontend;

use super::{ConnectOptions, Framed, ServerError, WireError};

/// Answers the server's authentication requests until AuthenticationOk.
pub(super) async fn authenticate(
    framed: &mut Framed,
    options: &ConnectOptions,
) -> Result<(), WireError> {
    let auth_error = |reason: String| WireError::Auth {
        user: options.user.clone(),
        reason,
    };
    let password = || {
        options.password.as_deref().ok_or_else(|| {
            auth_error("the server asks for a password and none is configured".into())
        })
    };
    let protocol = |e: std::io::Error| WireError::Protocol(e.to_string());
    let mut scram: Option<ScramSha256> = None;
    loop {
        match framed.next().await? {
            Backend::AuthenticationOk => return Ok(()),
            Backend::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut framed.write)
                    .map_err(protocol)?;
            }
            Backend::AuthenticationMd5Password(body) => {
                let hash = md5_hash(options.user.as_bytes(), password()?.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut framed.write).map_err(protocol)?;
            }
            Backend::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = Vec::new();
                while let Some(mechanism) = mechanisms.next().map_err(protocol)? {
                    offered.push(mechanism.to_owned());
                }
                if !offered.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(auth_error(format!(
                        "the server offers only SASL mechanisms {offered:?}; outboxd speaks SCRAM-SHA-256"
                    )));
                }
                let client =
                    ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(
                    "SCRAM-SHA-256",
                    client.message(),
                    &mut framed.write,
                )
                .map_err(protocol)?;
                scram = Some(client);
            }
            Backend::AuthenticationSaslContinue(body) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| WireError::Protocol("SASL continue without a start".into()))?;
                client
                    .update(body.data())
                    .map_err(|e| auth_error(format!("SCRAM exchange failed: {e}")))?;
                frontend::sasl_response(client.message(), &mut framed.write).map_err(protocol)?;
            }
            Backend::AuthenticationSaslFinal(body) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| WireError::Protocol("SASL final without a start".into()))?;
                client.finish(body.data()).map_err(|e| {
                    auth_error(format!("the server's SCRAM signature did not verify: {e}"))
                })?;
                continue;
            }
            Backend::ErrorResponse(body) => {
                let error = ServerError::parse(&body);
                // 28P01 invalid_password, 28000 invalid_authorization_specification (pg_hba).
                return Err(if error.code.starts_with("28") {
                    auth_error(error.to_string())
                } else {
                    WireError::Server(error)
                });
            }
            Backend::NoticeResponse(_) => continue,
            _ => {
                return Err(auth_error(
                    "the server asks for an authentication method outboxd does not speak \
                     (GSSAPI, SSPI or Kerberos); use scram-sha-256, md5 or password in pg_hba.conf"
                        .into(),
                ))
            }
        }
        framed.flush().await?;
    }
}
