//! The file system's error type and its mapping to errno values.
use daxfs_btree::TreeError;
use daxfs_device::DeviceError;
use daxfs_format::FormatError;

/// An error of a file-system operation. Each variant maps to the errno a user
/// of a POSIX file system expects (see [`FsError::errno`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: file exists")]
    Exists(String),
    #[error("{0}: not a directory")]
    NotDir(String),
    #[error("{0}: is a directory")]
    IsDir(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("{0}: file name too long")]
    NameTooLong(String),
    #[error("no space left on device ({0})")]
    NoSpace(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("file too large: {0}")]
    TooBig(String),
    #[error("{0}: too many levels of symbolic links")]
    Loop(String),
    #[error("bad file descriptor: {0}")]
    BadHandle(String),
    #[error("invalid cross-device link: {0}")]
    CrossDevice(String),
    #[error("operation not supported: {0}")]
    NotSupported(String),
    #[error("operation not permitted: {0}")]
    NotPermitted(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("input/output error: {0}")]
    Io(String),
    /// Still in use (unmounting while files are open).
    #[error("busy: {0}")]
    Busy(String),
    /// The file system is shut down after an unrepairable error; reads may still work.
    #[error("file system is shut down: {0}")]
    Shutdown(String),
    /// On-media metadata failed verification.
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    /// No such extended attribute.
    #[error("{0}: no such attribute")]
    NoData(String),
    /// A result does not fit the buffer given, or a name is out of range.
    #[error("result out of range: {0}")]
    Range(String),
    /// An extended-attribute value or list over its limit.
    #[error("argument list too long: {0}")]
    ArgListTooBig(String),
    /// A file has as many hard links as it may have.
    #[error("too many links: {0}")]
    TooManyLinks(String),
    /// A file handle (inode number and generation) names an inode that no
    /// longer exists, or whose number now belongs to another inode.
    #[error("stale file handle: {0}")]
    Stale(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl FsError {
    /// The errno value of this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound(_) => libc::ENOENT,
            FsError::Exists(_) => libc::EEXIST,
            FsError::NotDir(_) => libc::ENOTDIR,
            FsError::IsDir(_) => libc::EISDIR,
            FsError::NotEmpty(_) => libc::ENOTEMPTY,
            FsError::NameTooLong(_) => libc::ENAMETOOLONG,
            FsError::NoSpace(_) => libc::ENOSPC,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::TooBig(_) => libc::EFBIG,
            FsError::Loop(_) => libc::ELOOP,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::CrossDevice(_) => libc::EXDEV,
            FsError::NotSupported(_) => libc::EOPNOTSUPP,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::PermissionDenied(_) => libc::EACCES,
            FsError::Busy(_) => libc::EBUSY,
            FsError::NoData(_) => libc::ENODATA,
            FsError::Range(_) => libc::ERANGE,
            FsError::ArgListTooBig(_) => libc::E2BIG,
            FsError::TooManyLinks(_) => libc::EMLINK,
            FsError::Stale(_) => libc::ESTALE,
            FsError::Io(_) | FsError::Shutdown(_) | FsError::Corrupt(_) => libc::EIO,
            FsError::Device(DeviceError::OutOfRange { .. }) => libc::EIO,
            FsError::Device(DeviceError::Media { .. }) => libc::EIO,
            FsError::Device(DeviceError::Locked(_)) => libc::EBUSY,
            FsError::Device(DeviceError::Os { source, .. })
                if source.raw_os_error() == Some(libc::EFAULT) =>
            {
                libc::EFAULT
            }
            FsError::Device(_) => libc::EIO,
        }
    }

    /// The symbolic errno name, e.g. "ENOENT".
    pub fn errno_name(&self) -> &'static str {
        errno_name(self.errno())
    }
}

/// The symbolic name of an errno value.
pub fn errno_name(e: i32) -> &'static str {
    match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSPC => "ENOSPC",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ELOOP => "ELOOP",
        libc::EBADF => "EBADF",
        libc::EXDEV => "EXDEV",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EIO => "EIO",
        libc::EBUSY => "EBUSY",
        libc::ENODATA => "ENODATA",
        libc::ERANGE => "ERANGE",
        libc::E2BIG => "E2BIG",
        libc::EMLINK => "EMLINK",
        libc::ESTALE => "ESTALE",
        _ => "E?",
    }
}

impl From<TreeError> for FsError {
    fn from(e: TreeError) -> Self {
        match e {
            TreeError::NoSpace => FsError::NoSpace("no free block for metadata".into()),
            TreeError::Media { block } => {
                FsError::Io(format!("media error in metadata block {block}"))
            }
            other => FsError::Corrupt(other.to_string()),
        }
    }
}

impl From<FormatError> for FsError {
    fn from(e: FormatError) -> Self {
        FsError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;
