//! Text with placeholders, expanded per connection or per publication: URLs,
//! channel names and publish bodies.
//!
//! Placeholders: `{i}` the connection's index (0-based, unique across workers),
//! `{i%K}` that index modulo K, `{c}` the channel's index, `{channel}` the channel's
//! name, `{token}` the connection's token and `{payload}` the benchmark payload.
//! Each use allows only some of them.

use std::fmt;
use std::io::Write as _;

use serde::{Deserialize, Serialize};

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The connection index modulo this (`u64::MAX` for a bare `{i}`).
    Index(u64),
    ChannelIndex,
    Channel,
    Token,
    Payload,
}

/// A placeholder, to say which ones a use allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{i}` and `{i%K}`.
    Index,
    /// `{c}`.
    ChannelIndex,
    /// `{channel}`.
    Channel,
    /// `{token}`.
    Token,
    /// `{payload}`.
    Payload,
}

/// The values placeholders expand to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars<'a> {
    /// `{i}`.
    pub index: u64,
    /// `{c}`.
    pub channel_index: u64,
    /// `{channel}`.
    pub channel: &'a str,
    /// `{token}`: a JWT, inserted as it is (base64url and dots: unreserved
    /// characters, which need no escaping anywhere in a URL).
    pub token: &'a str,
    /// `{payload}`.
    pub payload: &'a [u8],
}

impl Template {
    /// Parses `text` where only known placeholders count and any other brace is
    /// literal text (for JSON bodies such as `{"channel":"{channel}"}`).
    pub fn lenient(text: &str) -> Template {
        Template::parse(text, false).expect("lenient parsing accepts any text")
    }

    /// Refuses a template using a placeholder outside `allowed`; `what` names the
    /// option in the message.
    pub fn allow_only(&self, what: &str, allowed: &[Placeholder]) -> Result<(), String> {
        for part in &self.parts {
            let (used, name) = match part {
                Part::Literal(_) => continue,
                Part::Index(_) => (Placeholder::Index, "{i}"),
                Part::ChannelIndex => (Placeholder::ChannelIndex, "{c}"),
                Part::Channel => (Placeholder::Channel, "{channel}"),
                Part::Token => (Placeholder::Token, "{token}"),
                Part::Payload => (Placeholder::Payload, "{payload}"),
            };
            if !allowed.contains(&used) {
                return Err(format!("{what} {self}: {name} cannot be used here"));
            }
        }
        Ok(())
    }

    /// Whether the template uses `placeholder`.
    pub fn uses(&self, placeholder: Placeholder) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                (part, placeholder),
                (Part::Index(_), Placeholder::Index)
                    | (Part::ChannelIndex, Placeholder::ChannelIndex)
                    | (Part::Channel, Placeholder::Channel)
                    | (Part::Token, Placeholder::Token)
                    | (Part::Payload, Placeholder::Payload)
            )
        })
    }

    /// Appends the expansion to `out` (no allocation beyond `out` growing).
    pub fn expand_into(&self, vars: &Vars<'_>, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.extend_from_slice(text.as_bytes()),
                Part::Index(modulus) => {
                    let _ = write!(out, "{}", vars.index % modulus);
                }
                Part::ChannelIndex => {
                    let _ = write!(out, "{}", vars.channel_index);
                }
                Part::Channel => out.extend_from_slice(vars.channel.as_bytes()),
                Part::Token => out.extend_from_slice(vars.token.as_bytes()),
                Part::Payload => out.extend_from_slice(vars.payload),
            }
        }
    }

    /// The expansion as text.
    pub fn expand(&self, vars: &Vars<'_>) -> String {
        let mut out = Vec::new();
        self.expand_into(vars, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Parses `text`; with `strict`, every brace must open a known placeholder.
    fn parse(text: &str, strict: bool) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            literal.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let placeholder = after
                .find('}')
                .map(|close| (close, placeholder(&after[..close])));
            match placeholder {
                Some((close, Some(part))) => {
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part.map_err(|e| format!("{text}: {e}"))?);
                    rest = &after[close + 1..];
                }
                Some((close, None)) if strict => {
                    return Err(format!(
                        "{text}: unknown placeholder {{{}}} (use {{i}}, {{i%K}}, {{c}}, \
                         {{channel}}, {{token}} or {{payload}})",
                        &after[..close]
                    ));
                }
                None if strict => return Err(format!("{text}: unclosed '{{'")),
                _ => {
                    literal.push('{');
                    rest = after;
                }
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }
}

/// The part for a placeholder's name: `None` if the name is no placeholder, an
/// error if it is one with a bad argument (`{i%0}`).
fn placeholder(name: &str) -> Option<Result<Part, String>> {
    Some(Ok(match name {
        "i" => Part::Index(u64::MAX),
        "c" => Part::ChannelIndex,
        "channel" => Part::Channel,
        "token" => Part::Token,
        "payload" => Part::Payload,
        _ => {
            let modulus = name.strip_prefix("i%")?;
            return Some(
                modulus
                    .parse()
                    .ok()
                    .filter(|&k| k > 0)
                    .map(Part::Index)
                    .ok_or_else(|| format!("{{{name}}}: K must be a positive integer")),
            );
        }
    }))
}

impl std::str::FromStr for Template {
    type Err = String;

    /// Parses strictly: every brace must open a known placeholder (URLs, names).
    fn from_str(text: &str) -> Result<Self, String> {
        Template::parse(text, true)
    }
}

impl TryFrom<String> for Template {
    type Error = String;

    fn try_from(template: String) -> Result<Self, String> {
        template.parse()
    }
}

impl From<Template> for String {
    fn from(template: Template) -> String {
        template.to_string()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Literal(text) => f.write_str(text)?,
                Part::Index(u64::MAX) => f.write_str("{i}")?,
                Part::Index(modulus) => write!(f, "{{i%{modulus}}}")?,
                Part::ChannelIndex => f.write_str("{c}")?,
                Part::Channel => f.write_str("{channel}")?,
                Part::Token => f.write_str("{token}")?,
                Part::Payload => f.write_str("{payload}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(index: u64) -> Vars<'static> {
        Vars {
            index,
            channel_index: index % 3,
            channel: "news",
            token: "",
            payload: b"hb1.2.3.xx",
        }
    }

    #[test]
    fn expands_placeholders() {
        let template: Template = "/events?channel=bench-{i%3}&n={i}".parse().unwrap();
        assert_eq!(template.expand(&vars(7)), "/events?channel=bench-1&n=7");
        assert_eq!(template.to_string(), "/events?channel=bench-{i%3}&n={i}");

        let template: Template = "/sub/{channel}?c={c}".parse().unwrap();
        assert_eq!(template.expand(&vars(5)), "/sub/news?c=2");
        assert!(template.uses(Placeholder::Channel));
        assert!(!template.uses(Placeholder::Payload));
    }

    #[test]
    fn expands_tokens_inside_an_encoded_connect_request() {
        // `cf_connect={"token":"{token}"}`, URL-encoded around the placeholder.
        let url = "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22{token}%22%7D";
        let template: Template = url.parse().unwrap();
        assert!(template.uses(Placeholder::Token));
        assert_eq!(template.to_string(), url);
        let vars = Vars {
            token: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaC03In0.c2ln-_",
            ..vars(7)
        };
        assert_eq!(
            template.expand(&vars),
            "/connection/uni_websocket?cf_connect=%7B%22token%22%3A%22\
             eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaC03In0.c2ln-_%22%7D"
        );
        assert!(
            template
                .allow_only("--publish-url", &[Placeholder::Channel])
                .unwrap_err()
                .contains("{token} cannot be used here")
        );
    }

    #[test]
    fn expands_json_bodies_leniently() {
        let body = Template::lenient(r#"{"channel":"{channel}","data":"{payload}"}"#);
        let mut out = b"head ".to_vec();
        body.expand_into(&vars(0), &mut out);
        assert_eq!(out, br#"head {"channel":"news","data":"hb1.2.3.xx"}"#);
        assert_eq!(
            body.to_string(),
            r#"{"channel":"{channel}","data":"{payload}"}"#
        );
        // Unclosed and unknown braces are text.
        assert_eq!(Template::lenient("{a}{").expand(&vars(0)), "{a}{");
        assert_eq!(
            Template::lenient("{payload}").expand(&vars(0)),
            "hb1.2.3.xx"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        for bad in ["/a{i", "/a{j}", "/a{i%0}", "/a{i%x}"] {
            assert!(bad.parse::<Template>().is_err(), "{bad}");
        }
        let url: Template = "/pub?id={channel}&x={payload}".parse().unwrap();
        assert!(
            url.allow_only("--publish-url", &[Placeholder::Channel])
                .unwrap_err()
                .contains("{payload} cannot be used here")
        );
        assert!(
            url.allow_only("--x", &[Placeholder::Channel, Placeholder::Payload])
                .is_ok()
        );
    }
}
