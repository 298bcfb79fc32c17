//! The chat's page for browsers (`sockit serve chat --web`): HTML, CSS and
//! plain JavaScript embedded in the binary, nothing loaded from elsewhere.
//! The page speaks the same line protocol as `nc`, one text message per
//! line, on `/ws` of the same listener.
//!
//! Everything a user typed reaches the page through `textContent`, never as
//! HTML, and the listener's Content-Security-Policy (`script-src 'self'`)
//! runs no inline script: a nick or line such as `<img src=x onerror=…>` is
//! shown as the text it is.

use crate::ws::Page;

/// Where the page's WebSocket is.
pub const PATH: &str = "/ws";

/// The page and what it loads.
pub const PAGES: [Page; 3] = [
    Page { path: "/", content_type: "text/html; charset=utf-8", body: include_bytes!("web/index.html") },
    Page { path: "/app.js", content_type: "text/javascript; charset=utf-8", body: include_bytes!("web/app.js") },
    Page { path: "/app.css", content_type: "text/css; charset=utf-8", body: include_bytes!("web/app.css") },
];
