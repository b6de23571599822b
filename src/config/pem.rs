//! PEM text as users paste it into a form, made whole again.
//!
//! Keys and certificates pasted into a single-line form field arrive with literal `\n` instead of
//! line breaks, with spaces instead of them, or with none at all. Parsers refuse such text, and the
//! refusal of a key parser may quote the text it read, which is secret: so the text is mended first,
//! and the callers' messages name the field, never the parser's words.

/// `text` with literal `\n` (and `\r\n`) turned into line breaks, and every `BEGIN`/`END` block
/// whose body lost its line breaks re-wrapped: the base64 body, stripped of whitespace, in lines of
/// 64 characters. A block with headers (`Proc-Type:`, `DEK-Info:`) keeps its body as it is. Text
/// without a whole block is returned with only the literal line breaks mended.
pub fn mend(text: &str) -> String {
    let text = text
        .replace("\\r\\n", "\n")
        .replace("\\n", "\n")
        .replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text.as_str();
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + "-----BEGIN ".len()..];
        let Some(label_len) = after.find("-----") else {
            break;
        };
        let label = &after[..label_len];
        let body_and_rest = &after[label_len + "-----".len()..];
        let footer = format!("-----END {label}-----");
        let Some(body_len) = body_and_rest.find(&footer) else {
            break;
        };
        let body = &body_and_rest[..body_len];
        out.push_str("-----BEGIN ");
        out.push_str(label);
        out.push_str("-----\n");
        if body.contains(':') {
            out.push_str(body.trim());
            out.push('\n');
        } else {
            let base64: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
            for line in base64.chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
        }
        out.push_str(&footer);
        out.push('\n');
        rest = &body_and_rest[body_len + footer.len()..];
    }
    if out.is_empty() {
        text
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgevZzL1gdAFr88hb2\nOF/2NxApJCzGCEDdfSp6VQO30hyhRANCAAQRWz+jn65BtOMvdyHKcvjBeBSDZH2r\n1RTwjmYSi9R/zpBnuQ4EiMnCqfMPWiZqB4QdbAd0E7oH50VpuZ1P087G\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_whole_block_is_unchanged() {
        assert_eq!(mend(BLOCK), BLOCK);
    }

    #[test]
    fn literal_newlines_spaces_and_no_newlines_are_mended() {
        assert_eq!(mend(&BLOCK.replace('\n', "\\n")), BLOCK);
        assert_eq!(mend(&BLOCK.replace('\n', " ")), BLOCK);
        assert_eq!(mend(&BLOCK.replace('\n', "")), BLOCK);
        assert_eq!(mend(&BLOCK.replace('\n', "\r\n")), BLOCK);
    }

    #[test]
    fn chains_keep_every_block_and_headers_stay() {
        let chain = format!("{BLOCK}{BLOCK}");
        assert_eq!(mend(&chain.replace('\n', " ")), chain);
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(mend(legacy), legacy);
    }

    #[test]
    fn text_without_a_block_is_left_alone() {
        assert_eq!(mend("not a key"), "not a key");
        assert_eq!(mend("-----BEGIN X----- no end"), "-----BEGIN X----- no end");
    }
}
