//! Renders Hugging Face Jinja chat templates with `minijinja`, configured the way transformers
//! configures Jinja2: `trim_blocks`, `lstrip_blocks`, loop controls, Python string methods
//! (`strip`, `startswith`, `split`, …), `raise_exception`, `strftime_now`, and a `tojson` that
//! writes JSON the way Python's `json.dumps(ensure_ascii=False)` does.

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::error::{Error, Result};

/// One chat message (`{"role": ..., "content": ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// Shorthand constructor.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// Special-token strings the templates may reference.
#[derive(Debug, Clone, Default)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::Template(describe(&e)))?;
        Ok(Self { env })
    }

    /// Renders `messages`; with `add_generation_prompt` the template opens an assistant turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        special: &SpecialTokens,
    ) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| Error::Template(describe(&e)))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => special.bos.clone().unwrap_or_default(),
            eos_token => special.eos.clone().unwrap_or_default(),
            pad_token => special.pad.clone(),
            unk_token => special.unk.clone(),
        };
        template
            .render(ctx)
            .map_err(|e| Error::Template(describe(&e)))
    }
}

fn describe(err: &minijinja::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text
}

fn raise_exception(message: String) -> std::result::Result<Value, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(fmt)` for the UTC date and time, supporting the directives templates use.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    format_utc(secs, &format)
}

/// Formats a Unix time (UTC) with a subset of `strftime`: `%Y %m %d %B %b %H %M %S %j %%`.
pub(crate) fn format_utc(secs: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let is_leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative[(month - 1) as usize] + day + i64::from(is_leap && month > 2);

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('B') => out.push_str(MONTHS[(month - 1) as usize]),
            Some('b') => out.push_str(&MONTHS[(month - 1) as usize][..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, keys in insertion order.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_python_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_python_json(
    value: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => match f64::try_from(value.clone()) {
            // Python writes floats with a fractional part (`1.0`) and integers without.
            Ok(f) if value.as_i64().is_none() && f.fract() == 0.0 && f.is_finite() => {
                out.push_str(&format!("{f:.1}"))
            }
            _ => out.push_str(&value.to_string()),
        },
        ValueKind::String => out.push_str(&quote(value.as_str().unwrap_or_default())),
        ValueKind::Seq | ValueKind::Iterable | ValueKind::Map => {
            // A map iterates over its keys.
            let is_map = matches!(value.kind(), ValueKind::Map);
            let (open, close) = if is_map { ('{', '}') } else { ('[', ']') };
            let items: Vec<Value> = value.try_iter()?.collect();
            out.push(open);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                if is_map {
                    out.push_str(&quote(&item.to_string()));
                    out.push_str(": ");
                    write_python_json(&value.get_item(item)?, indent, depth + 1, out)?;
                } else {
                    write_python_json(item, indent, depth + 1, out)?;
                }
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(close);
        }
        _ => out.push_str(&quote(&value.to_string())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `template` rendered over one user message `content`, without special tokens.
    fn render_user(template: &ChatTemplate, content: &str, add_generation_prompt: bool) -> String {
        let messages = [Message::new("user", content)];
        let special = SpecialTokens::default();
        template
            .render(&messages, add_generation_prompt, &special)
            .unwrap()
    }

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_with_generation_prompt() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let out = render_user(&t, "Hi", true);
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_loop_controls_and_exceptions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\
                   {% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\
                   [{{ m.content.strip() }}]{% endfor %}";
        let t = ChatTemplate::new(src).unwrap();
        let special = SpecialTokens {
            bos: Some("<s>".into()),
            ..Default::default()
        };
        let msgs = [
            Message::new("user", "  a "),
            Message::new("assistant", "b\n"),
            Message::new("user", "c"),
        ];
        assert_eq!(t.render(&msgs, false, &special).unwrap(), "<s>[a][b]");
        let err = t
            .render(&[Message::new("tool", "x")], false, &special)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad role tool"), "{err}");
    }

    #[test]
    fn tojson_matches_python() {
        let t = ChatTemplate::new("{{ messages[0] | tojson }}").unwrap();
        let out = render_user(&t, "é<", false);
        assert_eq!(out, r#"{"role": "user", "content": "é<"}"#);
        // json.dumps({"a": [1, 2.0, None, True], "b": {}}, indent=2)
        let t =
            ChatTemplate::new(r#"{{ {"a": [1, 2.0, none, true], "b": {}} | tojson(indent=2) }}"#)
                .unwrap();
        let out = t.render(&[], false, &SpecialTokens::default()).unwrap();
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    2.0,\n    null,\n    true\n  ],\n  \"b\": {}\n}"
        );
    }

    #[test]
    fn dates_format_like_strftime() {
        // 2024-07-26 00:00:00 UTC
        assert_eq!(format_utc(1_721_952_000, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(format_utc(951_782_400, "%Y-%m-%d %j"), "2000-02-29 060");
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = ChatTemplate::new("{% for %}").unwrap_err().to_string();
        assert!(err.starts_with("chat template:"), "{err}");
    }
}
