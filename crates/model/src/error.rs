//! ECS errors as the API reports them.
//!
//! One enum of the error names the AWS model (and the AWS JSON protocol) uses;
//! the server maps each to its HTTP status in one exhaustive match.

/// The `__type` of an ECS error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    // the ECS model's exceptions
    AccessDenied,
    AttributeLimitExceeded,
    Client,
    ClusterContainsCapacityProvider,
    ClusterContainsContainerInstances,
    ClusterContainsServices,
    ClusterContainsTasks,
    ClusterNotFound,
    Conflict,
    DaemonNotActive,
    DaemonNotFound,
    InvalidParameter,
    LimitExceeded,
    PlatformTaskDefinitionIncompatibility,
    PlatformUnknown,
    ResourceInUse,
    ResourceNotFound,
    Server,
    ServiceNotActive,
    ServiceNotFound,
    TargetNotConnected,
    TargetNotFound,
    UnsupportedFeature,
    UpdateInProgress,
    // the AWS JSON protocol's own
    Serialization,
    UnknownOperation,
    MissingAuthenticationToken,
    IncompleteSignature,
    UnrecognizedClient,
    InvalidSignature,
    NotFound,
    RequestEntityTooLarge,
}

impl ErrorKind {
    /// The name sent as `__type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AccessDenied => "AccessDeniedException",
            Self::AttributeLimitExceeded => "AttributeLimitExceededException",
            Self::Client => "ClientException",
            Self::ClusterContainsCapacityProvider => "ClusterContainsCapacityProviderException",
            Self::ClusterContainsContainerInstances => "ClusterContainsContainerInstancesException",
            Self::ClusterContainsServices => "ClusterContainsServicesException",
            Self::ClusterContainsTasks => "ClusterContainsTasksException",
            Self::ClusterNotFound => "ClusterNotFoundException",
            Self::Conflict => "ConflictException",
            Self::DaemonNotActive => "DaemonNotActiveException",
            Self::DaemonNotFound => "DaemonNotFoundException",
            Self::InvalidParameter => "InvalidParameterException",
            Self::LimitExceeded => "LimitExceededException",
            Self::PlatformTaskDefinitionIncompatibility => {
                "PlatformTaskDefinitionIncompatibilityException"
            }
            Self::PlatformUnknown => "PlatformUnknownException",
            Self::ResourceInUse => "ResourceInUseException",
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::Server => "ServerException",
            Self::ServiceNotActive => "ServiceNotActiveException",
            Self::ServiceNotFound => "ServiceNotFoundException",
            Self::TargetNotConnected => "TargetNotConnectedException",
            Self::TargetNotFound => "TargetNotFoundException",
            Self::UnsupportedFeature => "UnsupportedFeatureException",
            Self::UpdateInProgress => "UpdateInProgressException",
            Self::Serialization => "SerializationException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
            Self::NotFound => "NotFoundException",
            Self::RequestEntityTooLarge => "RequestEntityTooLargeException",
        }
    }

    /// The HTTP status AWS answers with for this error.
    pub fn status(self) -> u16 {
        match self {
            Self::Server => 500,
            // AccessDeniedException is a modelled ECS error without an HTTP
            // status in the model, so the JSON protocol's 400 applies (as
            // AWS answers a caller its IAM policy refuses); only the
            // signature errors of the edge are 403.
            Self::MissingAuthenticationToken
            | Self::UnrecognizedClient
            | Self::InvalidSignature => 403,
            Self::NotFound => 404,
            Self::RequestEntityTooLarge => 413,
            Self::AccessDenied
            | Self::AttributeLimitExceeded
            | Self::Client
            | Self::ClusterContainsCapacityProvider
            | Self::ClusterContainsContainerInstances
            | Self::ClusterContainsServices
            | Self::ClusterContainsTasks
            | Self::ClusterNotFound
            | Self::Conflict
            | Self::DaemonNotActive
            | Self::DaemonNotFound
            | Self::InvalidParameter
            | Self::LimitExceeded
            | Self::PlatformTaskDefinitionIncompatibility
            | Self::PlatformUnknown
            | Self::ResourceInUse
            | Self::ResourceNotFound
            | Self::ServiceNotActive
            | Self::ServiceNotFound
            | Self::TargetNotConnected
            | Self::TargetNotFound
            | Self::UnsupportedFeature
            | Self::UpdateInProgress
            | Self::Serialization
            | Self::UnknownOperation
            | Self::IncompleteSignature => 400,
        }
    }
}

/// An error as the API reports it: a kind and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.name())]
pub struct EcsError {
    pub kind: ErrorKind,
    pub message: String,
}

impl EcsError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    /// `InvalidParameterException`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }
    /// `ClientException`.
    pub fn client(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Client, message)
    }
    /// `ServerException`: something went wrong on berth's side.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Server, message)
    }
    /// `ClusterNotFoundException` as AWS words it.
    pub fn cluster_not_found() -> Self {
        Self::new(ErrorKind::ClusterNotFound, "Cluster not found.")
    }
}
