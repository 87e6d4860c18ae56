//! `bangui.control.v1.AuthService`.

use bangui_proto::{
    control::v1::{
        ChangePasswordRequest, ChangePasswordResponse, GetSessionRequest, GetSessionResponse, GetSetupStatusRequest,
        GetSetupStatusResponse, LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, SetupRequest,
        SetupResponse, auth_service_server::AuthService,
    },
    prost_types::Timestamp,
};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::auth::{Auth, Session};

/// The methods that need no session.
pub const OPEN_METHODS: &[&str] = &[
    "/bangui.control.v1.AuthService/GetSetupStatus",
    "/bangui.control.v1.AuthService/Setup",
    "/bangui.control.v1.AuthService/Login",
];

/// The AuthService handlers.
#[derive(Debug, Clone)]
pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    pub fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

/// The session the gate put on the request.
pub fn session<T>(request: &Request<T>) -> Result<&Session, Status> {
    request.extensions().get::<Session>().ok_or_else(|| Status::unauthenticated("no session"))
}

/// The caller's address, for throttling and logs.
fn client<T>(request: &Request<T>) -> String {
    request.remote_addr().map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string())
}

fn timestamp(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos: 0 })
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    #[instrument(skip_all, fields(rpc = "GetSetupStatus"))]
    async fn get_setup_status(
        &self,
        _request: Request<GetSetupStatusRequest>,
    ) -> Result<Response<GetSetupStatusResponse>, Status> {
        let (password_set, managed_by_config) = self.auth.setup_status().await?;
        Ok(Response::new(GetSetupStatusResponse { password_set, managed_by_config, setup_pending: !password_set }))
    }

    #[instrument(skip_all, fields(rpc = "Setup"))]
    async fn setup(&self, request: Request<SetupRequest>) -> Result<Response<SetupResponse>, Status> {
        let SetupRequest { password, setup_token } = request.into_inner();
        self.auth.setup(password, &setup_token).await?;
        Ok(Response::new(SetupResponse {}))
    }

    #[instrument(skip_all, fields(rpc = "Login"))]
    async fn login(&self, request: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        let client = client(&request);
        let (token, expires_at) = self.auth.login(request.into_inner().password, &client).await?;
        Ok(Response::new(LoginResponse { token, expires_at: timestamp(expires_at) }))
    }

    #[instrument(skip_all, fields(rpc = "Logout"))]
    async fn logout(&self, request: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        self.auth.logout(session(&request)?).await?;
        Ok(Response::new(LogoutResponse {}))
    }

    #[instrument(skip_all, fields(rpc = "GetSession"))]
    async fn get_session(&self, request: Request<GetSessionRequest>) -> Result<Response<GetSessionResponse>, Status> {
        let session = session(&request)?;
        Ok(Response::new(GetSessionResponse {
            created_at: timestamp(session.created_at),
            expires_at: timestamp(session.expires_at),
            client: session.client.clone(),
        }))
    }

    #[instrument(skip_all, fields(rpc = "ChangePassword"))]
    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        let session = session(&request)?.clone();
        let client = client(&request);
        let ChangePasswordRequest { old_password, new_password } = request.into_inner();
        self.auth.change_password(&session, &client, old_password, new_password).await?;
        Ok(Response::new(ChangePasswordResponse {}))
    }
}
