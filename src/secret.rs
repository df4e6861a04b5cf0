//! The control API's token (`$FLOWRUN_TOKEN`) is the runner's secret, not its jobs'. Taking it out of the
//! environment is not enough: `/proc/PID/environ` shows the process's first environment block, whatever `environ`
//! says later, and every job of the same user can read its parent's. So the token's bytes there are overwritten,
//! the variable removed, and the runner made non-dumpable (its `/proc` files then belong to root and it cannot be
//! traced by its jobs) while it holds a token.

use crate::error::Error;

const VAR: &str = "FLOWRUN_TOKEN";

/// `$FLOWRUN_TOKEN` when set and not empty, checked (a client must be able to send it in a header), then gone
/// from this process's environment. Call it before any other thread starts: the environment is changed.
pub fn take_token() -> Result<Option<String>, Error> {
    let token = match std::env::var(VAR) {
        Ok(t) if t.is_empty() => None,
        Ok(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(Error::Usage {
                message: "FLOWRUN_TOKEN has spaces or characters outside visible ASCII: no client could send it"
                    .into(),
                help: Some("use letters, digits and punctuation, e.g. `openssl rand -hex 32`".into()),
            })
        }
        Ok(t) => Some(t),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Error::usage("FLOWRUN_TOKEN is not valid text"))
        }
        Err(std::env::VarError::NotPresent) => None,
    };
    scrub();
    if token.is_some() {
        // SAFETY: prctl with constant arguments changes only this process's dumpable flag.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    }
    Ok(token)
}

/// Overwrite the value's bytes where the environment keeps them (the first block, shown by /proc), then remove
/// the variable.
fn scrub() {
    // SAFETY: getenv returns a pointer to the value inside the environment's string, NUL-terminated, owned by
    // the process; no other thread runs yet (see `take_token`), so nothing reads or changes it meanwhile.
    unsafe {
        let value = libc::getenv(c"FLOWRUN_TOKEN".as_ptr());
        if !value.is_null() {
            let len = libc::strlen(value);
            std::ptr::write_bytes(value, b'*', len);
        }
        // SAFETY (edition 2024 wording): single-threaded here, as above.
        std::env::remove_var(VAR);
    }
}
