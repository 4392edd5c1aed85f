//! Server error codes seen during connection setup: named constants, their display
//! names, and which of them mean the credentials or the account were refused.

pub const ER_CON_COUNT_ERROR: u16 = 1040;
pub const ER_OUT_OF_RESOURCES: u16 = 1041;
pub const ER_BAD_HOST_ERROR: u16 = 1042;
/// "Bad handshake", SQLSTATE 08S01.
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
/// "Access denied for user ...", SQLSTATE 28000.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// A command the server does not know, SQLSTATE 08S01.
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
pub const ER_BAD_DB_ERROR: u16 = 1049;
pub const ER_SERVER_SHUTDOWN: u16 = 1053;
/// "Unknown error": MariaDB's code for a PROXY header it cannot parse.
pub const ER_UNKNOWN_ERROR: u16 = 1105;
pub const ER_HOST_IS_BLOCKED: u16 = 1129;
pub const ER_HOST_NOT_PRIVILEGED: u16 = 1130;
pub const ER_ABORTING_CONNECTION: u16 = 1152;
pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
pub const ER_NET_UNCOMPRESS_ERROR: u16 = 1157;
pub const ER_NET_READ_ERROR: u16 = 1158;
pub const ER_NET_READ_INTERRUPTED: u16 = 1159;
pub const ER_NET_ERROR_ON_WRITE: u16 = 1160;
pub const ER_NET_WRITE_INTERRUPTED: u16 = 1161;
pub const ER_NEW_ABORTING_CONNECTION: u16 = 1184;
pub const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
pub const ER_USER_LIMIT_REACHED: u16 = 1226;
/// The client insists on an auth plugin the server does not offer, SQLSTATE 08004.
pub const ER_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
pub const ER_SERVER_IS_IN_SECURE_AUTH_MODE: u16 = 1275;
pub const ER_ACCESS_DENIED_NO_PASSWORD_ERROR: u16 = 1698;
pub const ER_MUST_CHANGE_PASSWORD: u16 = 1820;
pub const ER_MUST_CHANGE_PASSWORD_LOGIN: u16 = 1862;
/// MySQL's locked account.
pub const ER_ACCOUNT_HAS_BEEN_LOCKED: u16 = 3118;
pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// MySQL's failed-login lock.
pub const ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK: u16 = 3955;
/// MariaDB's locked account (shown as ER_ACCOUNT_HAS_BEEN_LOCKED, its name there).
pub const ER_ACCOUNT_HAS_BEEN_LOCKED_MARIADB: u16 = 4151;

/// Symbolic name of a server error code seen during connection setup.
pub fn error_name(code: u16) -> Option<&'static str> {
    Some(match code {
        ER_CON_COUNT_ERROR => "ER_CON_COUNT_ERROR",
        ER_OUT_OF_RESOURCES => "ER_OUT_OF_RESOURCES",
        ER_BAD_HOST_ERROR => "ER_BAD_HOST_ERROR",
        ER_HANDSHAKE_ERROR => "ER_HANDSHAKE_ERROR",
        ER_DBACCESS_DENIED_ERROR => "ER_DBACCESS_DENIED_ERROR",
        ER_ACCESS_DENIED_ERROR => "ER_ACCESS_DENIED_ERROR",
        ER_UNKNOWN_COM_ERROR => "ER_UNKNOWN_COM_ERROR",
        ER_BAD_DB_ERROR => "ER_BAD_DB_ERROR",
        ER_SERVER_SHUTDOWN => "ER_SERVER_SHUTDOWN",
        ER_UNKNOWN_ERROR => "ER_UNKNOWN_ERROR",
        ER_HOST_IS_BLOCKED => "ER_HOST_IS_BLOCKED",
        ER_HOST_NOT_PRIVILEGED => "ER_HOST_NOT_PRIVILEGED",
        ER_ABORTING_CONNECTION => "ER_ABORTING_CONNECTION",
        ER_NET_PACKET_TOO_LARGE => "ER_NET_PACKET_TOO_LARGE",
        ER_NET_PACKETS_OUT_OF_ORDER => "ER_NET_PACKETS_OUT_OF_ORDER",
        ER_NET_UNCOMPRESS_ERROR => "ER_NET_UNCOMPRESS_ERROR",
        ER_NET_READ_ERROR => "ER_NET_READ_ERROR",
        ER_NET_READ_INTERRUPTED => "ER_NET_READ_INTERRUPTED",
        ER_NET_ERROR_ON_WRITE => "ER_NET_ERROR_ON_WRITE",
        ER_NET_WRITE_INTERRUPTED => "ER_NET_WRITE_INTERRUPTED",
        ER_NEW_ABORTING_CONNECTION => "ER_NEW_ABORTING_CONNECTION",
        ER_TOO_MANY_USER_CONNECTIONS => "ER_TOO_MANY_USER_CONNECTIONS",
        ER_USER_LIMIT_REACHED => "ER_USER_LIMIT_REACHED",
        ER_NOT_SUPPORTED_AUTH_MODE => "ER_NOT_SUPPORTED_AUTH_MODE",
        ER_SERVER_IS_IN_SECURE_AUTH_MODE => "ER_SERVER_IS_IN_SECURE_AUTH_MODE",
        ER_ACCESS_DENIED_NO_PASSWORD_ERROR => "ER_ACCESS_DENIED_NO_PASSWORD_ERROR",
        ER_MUST_CHANGE_PASSWORD => "ER_MUST_CHANGE_PASSWORD",
        ER_MUST_CHANGE_PASSWORD_LOGIN => "ER_MUST_CHANGE_PASSWORD_LOGIN",
        ER_ACCOUNT_HAS_BEEN_LOCKED | ER_ACCOUNT_HAS_BEEN_LOCKED_MARIADB => "ER_ACCOUNT_HAS_BEEN_LOCKED",
        ER_SECURE_TRANSPORT_REQUIRED => "ER_SECURE_TRANSPORT_REQUIRED",
        ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK => {
            "ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK"
        }
        _ => return None,
    })
}

/// True for errors that mean the credentials or the account were refused
/// (as opposed to server limits, host blocks or network failures).
pub fn is_auth_error(code: u16) -> bool {
    matches!(
        code,
        ER_DBACCESS_DENIED_ERROR
            | ER_ACCESS_DENIED_ERROR
            | ER_NOT_SUPPORTED_AUTH_MODE
            | ER_SERVER_IS_IN_SECURE_AUTH_MODE
            | ER_ACCESS_DENIED_NO_PASSWORD_ERROR
            | ER_MUST_CHANGE_PASSWORD
            | ER_MUST_CHANGE_PASSWORD_LOGIN
            | ER_ACCOUNT_HAS_BEEN_LOCKED
            | ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK
            | ER_ACCOUNT_HAS_BEEN_LOCKED_MARIADB
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_and_auth_errors() {
        let named = [
            (1040, "ER_CON_COUNT_ERROR"),
            (1041, "ER_OUT_OF_RESOURCES"),
            (1042, "ER_BAD_HOST_ERROR"),
            (1043, "ER_HANDSHAKE_ERROR"),
            (1044, "ER_DBACCESS_DENIED_ERROR"),
            (1045, "ER_ACCESS_DENIED_ERROR"),
            (1047, "ER_UNKNOWN_COM_ERROR"),
            (1049, "ER_BAD_DB_ERROR"),
            (1053, "ER_SERVER_SHUTDOWN"),
            (1105, "ER_UNKNOWN_ERROR"),
            (1129, "ER_HOST_IS_BLOCKED"),
            (1130, "ER_HOST_NOT_PRIVILEGED"),
            (1152, "ER_ABORTING_CONNECTION"),
            (1153, "ER_NET_PACKET_TOO_LARGE"),
            (1156, "ER_NET_PACKETS_OUT_OF_ORDER"),
            (1157, "ER_NET_UNCOMPRESS_ERROR"),
            (1158, "ER_NET_READ_ERROR"),
            (1159, "ER_NET_READ_INTERRUPTED"),
            (1160, "ER_NET_ERROR_ON_WRITE"),
            (1161, "ER_NET_WRITE_INTERRUPTED"),
            (1184, "ER_NEW_ABORTING_CONNECTION"),
            (1203, "ER_TOO_MANY_USER_CONNECTIONS"),
            (1226, "ER_USER_LIMIT_REACHED"),
            (1251, "ER_NOT_SUPPORTED_AUTH_MODE"),
            (1275, "ER_SERVER_IS_IN_SECURE_AUTH_MODE"),
            (1698, "ER_ACCESS_DENIED_NO_PASSWORD_ERROR"),
            (1820, "ER_MUST_CHANGE_PASSWORD"),
            (1862, "ER_MUST_CHANGE_PASSWORD_LOGIN"),
            (3118, "ER_ACCOUNT_HAS_BEEN_LOCKED"),
            (3159, "ER_SECURE_TRANSPORT_REQUIRED"),
            (3955, "ER_USER_ACCESS_DENIED_FOR_USER_ACCOUNT_BLOCKED_BY_PASSWORD_LOCK"),
            (4151, "ER_ACCOUNT_HAS_BEEN_LOCKED"),
        ];
        for (code, name) in named {
            assert_eq!(error_name(code), Some(name), "{code}");
        }
        assert_eq!(error_name(1064), None);
        for code in [1044, 1045, 1698, 1251, 1275, 1820, 1862, 3118, 3955, 4151] {
            assert!(is_auth_error(code), "{code}");
        }
        for code in [1040, 1043, 1049, 1129, 1130, 1158, 1203, 3159, 0] {
            assert!(!is_auth_error(code), "{code}");
        }
        // The constants are the numbers the table had before it was named.
        assert_eq!((ER_HANDSHAKE_ERROR, ER_ACCESS_DENIED_ERROR, ER_UNKNOWN_COM_ERROR), (1043, 1045, 1047));
    }
}
