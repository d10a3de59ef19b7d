//! Paths as proxies log them → the routes the agent sends.

use super::*;

fn plain() -> RouteRules {
    RouteRules::default()
}

#[test]
fn request_lines_become_normalised_routes() {
    let table: &[(&str, Option<&str>)] = &[
        ("GET /api/users/42 HTTP/1.1", Some("/api/users/:id")),
        (
            "GET /api/users/42?expand=1&x=2 HTTP/1.1",
            Some("/api/users/:id"),
        ),
        ("GET /search?q=/api/users/7 HTTP/2.0", Some("/search")),
        ("GET /page#frag HTTP/1.1", Some("/page")),
        // UUIDs, either case
        (
            "DELETE /orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items/9 HTTP/1.1",
            Some("/orders/:id/items/:id"),
        ),
        (
            "GET /o/3F2504E0-4F89-11D3-9A0C-0305E82C3301 HTTP/1.1",
            Some("/o/:id"),
        ),
        // hashes: 16+ hex digits; 15 are a word's business
        (
            "GET /blobs/sha/9f86d081884c7d659a2feaa0c55ad015 HTTP/1.1",
            Some("/blobs/sha/:id"),
        ),
        (
            "GET /c/deadbeefcafe123 HTTP/1.1",
            Some("/c/deadbeefcafe123"),
        ),
        // tokens: 24+ url-safe characters with digits and letters
        (
            "GET /reset/eyJhbGciOiJIUzI1NiJ9_xY-12abcDEF HTTP/1.1",
            Some("/reset/:id"),
        ),
        (
            "GET /blog/a-long-readable-slug-without-numbers HTTP/1.1",
            Some("/blog/a-long-readable-slug-without-numbers"),
        ),
        ("GET /v2/items HTTP/1.1", Some("/v2/items")),
        // trailing and doubled slashes are one route
        ("GET /api/users/ HTTP/1.1", Some("/api/users")),
        ("GET //api//users HTTP/1.1", Some("/api/users")),
        ("GET / HTTP/1.1", Some("/")),
        ("GET /?utm=x HTTP/1.1", Some("/")),
        // percent-encoding is left as written
        (
            "GET /files/a%20b/%E2%82%AC HTTP/1.1",
            Some("/files/a%20b/%E2%82%AC"),
        ),
        ("GET /static/x.css HTTP/1.1", Some("/static/x.css")),
        // a forward proxy's absolute-form target keeps its path
        ("GET http://example.com/a/12?x HTTP/1.1", Some("/a/:id")),
        ("GET http://example.com HTTP/1.1", Some("/")),
        // OPTIONS * and CONNECT
        ("OPTIONS * HTTP/1.1", Some("*")),
        ("CONNECT example.com:443 HTTP/1.1", Some("example.com:443")),
        (
            "CONNECT [2001:db8::1]:443 HTTP/1.1",
            Some("[2001:db8::1]:443"),
        ),
        // HTTP/0.9 has no protocol
        ("GET /old/1", Some("/old/:id")),
        // a space in the target (a broken client): its first word
        ("POST /api?q=a b HTTP/2.0", Some("/api")),
        // malformed request lines: no route
        ("-", None),
        ("", None),
        (r"\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03", None),
        ("GET", None),
        ("get /lower HTTP/1.1", None),
        ("GET example.com:443 HTTP/1.1", None),
        ("GET ../etc/passwd HTTP/1.1", None),
        ("PRI * HTTP/2.0", Some("*")),
    ];
    for (request, route) in table {
        assert_eq!(
            plain().route_of_request(request).as_deref(),
            *route,
            "{request:?}"
        );
    }
}

#[test]
fn identifier_segments() {
    for id in [
        "0",
        "42",
        "0012345",
        "550e8400-e29b-41d4-a716-446655440000",
        "0123456789abcdef",
        "ABCDEF0123456789ABCDEF",
        "dGhpcyBpcyBhIHRva2VuIDEyMw==",
        "app.3f9a8b7c6d5e4f3a.bundle.js",
    ] {
        assert!(is_identifier(id), "{id} is an identifier");
    }
    for word in [
        "users",
        "v2",
        "x.css",
        "abcdef",
        "deadbeef",
        "café",
        "bootstrap.bundle.min.js.map",
        // hex with a dash too few is no UUID, and too short for a token
        "550e8400-e29b-41d4",
        "12a",
        ":id",
    ] {
        assert!(!is_identifier(word), "{word} is a word");
    }
}

#[test]
fn routes_are_at_most_256_characters_cut_on_a_character_boundary() {
    let long = format!("/{}", "é".repeat(400));
    let route = plain().route_of_target(&long).unwrap();
    assert_eq!(route.chars().count(), MAX_DIMENSION_CHARS);
    assert!(route.ends_with('é'));
    // control characters (a JSON log may hold them decoded) are replaced
    assert_eq!(plain().route_of_target("/a\u{7}b").as_deref(), Some("/a?b"));
}

#[test]
fn the_first_matching_pattern_wins_and_unmatched_paths_are_normalised() {
    let rules = RouteRules::new(&[
        "/api/users/me",
        "/api/users/:id",
        "/api/users/:id/posts/*",
        "/static/**",
    ])
    .unwrap();
    let table = [
        ("/api/users/me", "/api/users/me"),
        ("/api/users/alice", "/api/users/:id"),
        ("/api/users/42/", "/api/users/:id"),
        (
            "/api/users/42/posts/hello-world?x=1",
            "/api/users/:id/posts/*",
        ),
        ("/static/css/site.css", "/static/**"),
        ("/static", "/static/**"),
        // no pattern: normalised
        ("/api/users/42/posts", "/api/users/:id/posts"),
        ("/health", "/health"),
    ];
    for (path, route) in table {
        assert_eq!(
            rules.route_of_target(path).as_deref(),
            Some(route),
            "{path}"
        );
    }
    assert_eq!(
        rules
            .route_of_request("GET /api/users/bob?x HTTP/1.1")
            .as_deref(),
        Some("/api/users/:id")
    );
}

#[test]
fn bad_patterns_are_refused_and_pattern_files_skip_comments() {
    assert!(RouteRules::new(&["api/users"]).is_err());
    assert!(RouteRules::new(&["/a/**/b"]).is_err());
    assert!(RouteRules::new(&[format!("/{}", "a".repeat(300))]).is_err());
    let text = "# the API\n/api/users/:id\n\n  /static/**  \n";
    assert_eq!(
        RouteRules::parse_file(text),
        ["/api/users/:id", "/static/**"]
    );
}

#[test]
fn a_target_or_a_request_line_whichever_a_json_field_holds() {
    let r = plain();
    assert_eq!(r.route_of("/a/1?b").as_deref(), Some("/a/:id"));
    assert_eq!(r.route_of("GET /a/1?b HTTP/1.1").as_deref(), Some("/a/:id"));
    assert_eq!(r.route_of("-"), None);
}

#[test]
fn the_upstream_is_the_last_one_tried() {
    let table: &[(&str, Option<&str>)] = &[
        ("10.0.3.7:8080", Some("10.0.3.7:8080")),
        ("10.0.0.1:80, 10.0.0.2:80", Some("10.0.0.2:80")),
        (
            "10.0.0.1:80, 10.0.0.2:80 : 10.0.1.1:80",
            Some("10.0.1.1:80"),
        ),
        ("10.0.0.1:80 : -", Some("10.0.0.1:80")),
        ("unix:/run/app.sock", Some("unix:/run/app.sock")),
        ("[2001:db8::1]:443", Some("[2001:db8::1]:443")),
        ("backend_pool", Some("backend_pool")),
        ("-", None),
        ("", None),
    ];
    for (addr, upstream) in table {
        assert_eq!(upstream_of(addr).as_deref(), *upstream, "{addr:?}");
    }
}
