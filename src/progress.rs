//! Progress bars on stderr.
