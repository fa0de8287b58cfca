//! The checker: walks a parsed message against the schema's tables and reports every
//! violation with its JSON pointer.

use super::formats::{date_time, ip};
use super::json::{JStr, Json};
use super::schema::*;

/// One thing wrong with a message: where (a JSON pointer such as
/// `/Events/0/Payload/0/RemotePort`; the empty pointer is the whole message and is shown as
/// `/`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", if .path.is_empty() { "/" } else { .path.as_str() })]
pub struct Violation {
    pub path: String,
    pub message: String,
}

pub(super) fn get<'v>(members: &'v [(JStr, Json)], key: &str) -> Option<&'v Json> {
    members.iter().find(|(k, _)| k.is(key)).map(|(_, v)| v)
}

pub(super) fn str_of(v: Option<&Json>) -> Option<&str> {
    match v {
        Some(Json::Str(s)) if s.lone.is_empty() => Some(&s.text),
        _ => None,
    }
}

/// A JSON pointer one level down.
pub(super) fn child(path: &str, key: &str) -> String {
    format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"))
}

pub(super) fn item(path: &str, i: usize) -> String {
    format!("{path}/{i}")
}

pub(super) fn clip(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

/// "string \"abc\"", "integer 22", "number 1.5", "boolean true", "null", "array", "object".
pub(super) fn describe(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(b) => format!("boolean {b}"),
        Json::Num(n) => {
            let t: String = n.text.chars().take(40).collect();
            let more = if n.text.len() > 40 { "…" } else { "" };
            if n.integral {
                format!("integer {t}{more}")
            } else {
                format!("number {t}{more}")
            }
        }
        Json::Str(s) => format!("string {}", clip(&s.text)),
        Json::Arr(a) => format!("an array of {} items", a.len()),
        Json::Obj(_) => "an object".into(),
    }
}

pub(super) fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Default)]
pub(super) struct Report {
    pub(super) violations: Vec<Violation>,
}

impl Report {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Violation {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Unknown keys (in document order) and missing required ones.
    fn keys(
        &mut self,
        path: &str,
        members: &[(JStr, Json)],
        allowed: &[&str],
        required: &[&str],
        what: &str,
    ) {
        for (k, _) in members {
            if !allowed.iter().any(|a| k.is(a)) {
                self.add(
                    child(path, &k.text),
                    format!("unknown key: {what} has only {}", allowed.join(", ")),
                );
            }
        }
        for r in required {
            if get(members, r).is_none() {
                self.add(path, format!("missing required key \"{r}\" of {what}"));
            }
        }
    }

    fn value(&mut self, path: &str, v: &Json, ty: Ty) {
        match (ty, v) {
            (Ty::Str, Json::Str(_)) | (Ty::Bool, Json::Bool(_)) => {}
            (Ty::Int, Json::Num(n)) if n.integral => {}
            (Ty::Guid, Json::Str(s)) => {
                let n = s.chars();
                if n != 36 {
                    self.add(
                        path,
                        format!(
                            "must be 36 characters long (a GUID), found {n}: {}",
                            clip(&s.text)
                        ),
                    );
                }
            }
            (Ty::DateTime, Json::Str(s)) => {
                if let Err(why) = date_time(&s.text) {
                    self.add(
                        path,
                        format!("{} is not an RFC 3339 date-time: {why}", clip(&s.text)),
                    );
                }
            }
            (Ty::Ip, Json::Str(s)) => {
                if let Err(why) = ip(&s.text) {
                    self.add(
                        path,
                        format!("{} is not an IP address: {why}", clip(&s.text)),
                    );
                }
            }
            (Ty::OneOf(choices), Json::Str(s)) if choices.iter().any(|c| s.is(c)) => {}
            (Ty::OneOf(choices), _) => self.add(
                path,
                format!(
                    "must be one of {}, found {}",
                    quoted_list(choices),
                    describe(v)
                ),
            ),
            (Ty::Details, Json::Obj(members)) => {
                for (k, val) in members {
                    if !matches!(val, Json::Str(_)) {
                        self.add(
                            child(path, &k.text),
                            format!(
                                "ExtraDetails values must be strings, found {}",
                                describe(val)
                            ),
                        );
                    }
                }
            }
            (Ty::Details, _) => self.add(
                path,
                format!(
                    "must be an object of strings (ExtraDetails), found {}",
                    describe(v)
                ),
            ),
            (Ty::Int, _) => self.add(path, format!("must be an integer, found {}", describe(v))),
            (Ty::Bool, _) => self.add(path, format!("must be a boolean, found {}", describe(v))),
            (Ty::Str | Ty::Guid | Ty::DateTime | Ty::Ip, _) => {
                self.add(path, format!("must be a string, found {}", describe(v)))
            }
        }
    }

    fn fields(&mut self, path: &str, members: &[(JStr, Json)], fields: &[(&str, Ty)]) {
        for (k, v) in members {
            if let Some((_, ty)) = fields.iter().find(|(name, _)| k.is(name)) {
                self.value(&child(path, &k.text), v, *ty);
            }
        }
    }

    pub(super) fn message(&mut self, v: &Json) {
        let Json::Obj(members) = v else {
            self.add(
                "",
                format!(
                    "a security message must be a JSON object, found {}",
                    describe(v)
                ),
            );
            return;
        };
        self.keys(
            "",
            members,
            ENVELOPE_KEYS,
            ENVELOPE_KEYS,
            "a security message",
        );
        self.fields("", members, ENVELOPE);
        match get(members, "Events") {
            None => {}
            Some(Json::Arr(events)) if events.is_empty() => {
                self.add(
                    "/Events",
                    "must have at least one event, found an empty array",
                );
            }
            Some(Json::Arr(events)) => {
                for (i, e) in events.iter().enumerate() {
                    self.event(&item("/Events", i), e);
                }
            }
            Some(other) => self.add(
                "/Events",
                format!("must be an array of events, found {}", describe(other)),
            ),
        }
    }

    pub(super) fn event(&mut self, path: &str, v: &Json) {
        let Json::Obj(members) = v else {
            self.add(
                path,
                format!("an event must be an object, found {}", describe(v)),
            );
            return;
        };
        self.keys(path, members, EVENT_KEYS, EVENT_KEYS, "an event");
        self.fields(path, members, EVENT);
        let category = str_of(get(members, "Category")).filter(|c| CATEGORIES.contains(c));
        let event_type = str_of(get(members, "EventType")).filter(|t| EVENT_TYPES.contains(t));
        let is_empty = match get(members, "IsEmpty") {
            Some(Json::Bool(b)) => Some(*b),
            _ => None,
        };
        let payload = match get(members, "Payload") {
            Some(Json::Arr(items)) => Some(items.as_slice()),
            Some(other) => {
                self.add(
                    child(path, "Payload"),
                    format!("must be an array, found {}", describe(other)),
                );
                None
            }
            None => None,
        };

        // The oneOf over Category, IsEmpty and the payload's length: `Periodic` with
        // `IsEmpty: true` and any payload (even a non-empty one), `Periodic` with
        // `IsEmpty: false` and at least one item, or `Triggered` with `IsEmpty: false` and at
        // least one item. When one of the three is missing or of the wrong type the event is
        // already invalid and said so above.
        if let (Some(c), Some(empty), Some(items)) = (category, is_empty, payload) {
            match (c, empty, items.is_empty()) {
                ("Periodic", true, _) | (_, false, false) => {}
                ("Periodic", false, true) => self.add(
                    child(path, "Payload"),
                    "is empty but IsEmpty is false (an empty Periodic event says IsEmpty: true)",
                ),
                (_, true, _) => self.add(
                    child(path, "IsEmpty"),
                    "a Triggered event cannot be empty (IsEmpty must be false, with at least \
                     one Payload item)",
                ),
                (_, false, true) => self.add(
                    child(path, "Payload"),
                    "a Triggered event needs at least one Payload item",
                ),
            }
        }

        // The oneOf over the typed schemas, selected by Name: a name that is not one of them
        // matches none, so the event is invalid.
        let name = match get(members, "Name") {
            Some(Json::Str(s)) => s,
            _ => return,
        };
        let Some(typed) = TYPED.iter().find(|t| name.is(t.name)) else {
            let names: Vec<&str> = TYPED.iter().map(|t| t.name).collect();
            self.add(
                child(path, "Name"),
                format!(
                    "{} is not an event type of the schema ({})",
                    clip(&name.text),
                    names.join(", ")
                ),
            );
            return;
        };
        if let Some(c) = category.filter(|c| *c != typed.category) {
            self.add(
                child(path, "Category"),
                format!("a {} event is {}, not {c}", typed.name, typed.category),
            );
        }
        if let Some(t) = event_type.filter(|t| *t != typed.event_type) {
            self.add(
                child(path, "EventType"),
                format!(
                    "a {} event has EventType {}, not {t}",
                    typed.name, typed.event_type
                ),
            );
        }
        if let Some(version) = match get(members, "PayloadSchemaVersion") {
            Some(Json::Str(v)) if !v.is("1.0") => Some(v),
            _ => None,
        } {
            self.add(
                child(path, "PayloadSchemaVersion"),
                format!(
                    "must be \"1.0\" for a {} event, found {}",
                    typed.name,
                    clip(&version.text)
                ),
            );
        }
        let what = format!("a {} payload item", typed.name);
        let allowed: Vec<&str> = typed.fields.iter().map(|(n, _)| *n).collect();
        let payload_path = child(path, "Payload");
        for (i, p) in payload.unwrap_or_default().iter().enumerate() {
            let p_path = item(&payload_path, i);
            let Json::Obj(fields) = p else {
                self.add(
                    p_path,
                    format!("{what} must be an object, found {}", describe(p)),
                );
                continue;
            };
            self.keys(&p_path, fields, &allowed, typed.required, &what);
            self.fields(&p_path, fields, typed.fields);
            if !typed.one_of.is_empty() && !typed.one_of.iter().any(|k| get(fields, k).is_some()) {
                self.add(
                    p_path,
                    format!("{what} needs {} (at least one)", typed.one_of.join(" or ")),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::sample::{PORTS, event, message};
    use crate::validate::validate_message;

    #[test]
    fn category_is_empty_and_payload_go_together() {
        let v = |c, n, e, p| validate_message(&message(&event(c, n, e, p)));
        assert_eq!(v("Periodic", "ListeningPorts", false, PORTS), Ok(()));
        assert_eq!(v("Periodic", "ListeningPorts", true, ""), Ok(()));
        // IsEmpty true with items: the schema allows it.
        assert_eq!(v("Periodic", "ListeningPorts", true, PORTS), Ok(()));
        let e = v("Periodic", "ListeningPorts", false, "").unwrap_err();
        assert_eq!(e[0].path, "/Events/0/Payload", "{e:?}");
        let login =
            r#"{"ProcessId":1,"UserName":"u","Operation":"o","Executable":"e","Result":"Fail"}"#;
        assert_eq!(v("Triggered", "Login", false, login), Ok(()));
        let e = v("Triggered", "Login", true, login).unwrap_err();
        assert_eq!(e[0].path, "/Events/0/IsEmpty", "{e:?}");
        assert!(v("Triggered", "Login", false, "").is_err());
        // Category fixed by the typed schema.
        let e = v("Triggered", "ListeningPorts", false, PORTS).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/Events/0/Category: a ListeningPorts event is Periodic, not Triggered"
        );
    }

    #[test]
    fn violations_say_where_and_what() {
        let p = r#"{"RemoteAddress":"01.2.3.4","RemotePort":22,"Direction":"Out","Protocol":"TCP","ProcessId":1.5,"Executable":"/bin/x","Foo":"x"}"#;
        let e = validate_message(&message(&event("Triggered", "ConnectionCreate", false, p)))
            .unwrap_err();
        let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/Events/0/Payload/0/Foo: unknown key: a ConnectionCreate payload item has only RemoteAddress, RemotePort, LocalAddress, LocalPort, Direction, Protocol, ProcessId, UserId, Executable, CommandLine, ExtraDetails",
                "/Events/0/Payload/0/RemoteAddress: \"01.2.3.4\" is not an IP address: not IPv4: leading zeros are not permitted in \"01\"",
                "/Events/0/Payload/0/RemotePort: must be a string, found integer 22",
                "/Events/0/Payload/0/ProcessId: must be an integer, found number 1.5",
            ]
        );
        let e = validate_message("[]").unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/: a security message must be a JSON object, found an array of 0 items"
        );
        let e = validate_message("{\"a\":").unwrap_err();
        assert_eq!(e[0].path, "");
        assert!(e[0].message.starts_with("not JSON"), "{e:?}");
        let e = validate_message(&message(&event("Triggered", "Nope", false, PORTS))).unwrap_err();
        assert!(
            e[0].to_string()
                .starts_with("/Events/0/Name: \"Nope\" is not an event type"),
            "{e:?}"
        );
        let login = r#"{"ProcessId":1,"Operation":"o","Executable":"e","Result":"Fail"}"#;
        let e = validate_message(&message(&event("Triggered", "Login", false, login))).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "/Events/0/Payload/0: a Login payload item needs UserId or UserName (at least one)"
        );
    }
}
