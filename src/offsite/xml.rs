//! Reading S3's XML answers tolerantly: servers differ in the root element's name
//! (`InitiateMultipartUploadResult` on AWS, `InitiateMultipartUpload` on rclone), in
//! whether they declare the S3 namespace, and in prefixes, so elements are matched by
//! their local name alone. quick-xml does the tokenizing; this file builds a small tree.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Deeper nesting than any S3 answer has is refused rather than followed.
const MAX_DEPTH: usize = 32;

/// An element: its local name, its text (entities resolved) and its children.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child named `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.trim())
    }

    /// Whether this is the answer `name`, written with or without the `Result` suffix.
    pub fn is(&self, name: &str) -> bool {
        self.name == name || self.name.strip_suffix("Result") == Some(name)
    }
}

/// The document's root element.
pub fn parse(text: &str) -> Result<Node, String> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Node> = Vec::new();
    let local = |raw: &str| raw.to_string();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not XML at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                }
                stack.push(Node {
                    name: local(e.local_name().as_ref()),
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                let node = Node {
                    name: local(e.local_name().as_ref()),
                    ..Node::default()
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::End(_) => {
                let Some(node) = stack.pop() else {
                    return Err("an end tag without its start".into());
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => return Ok(node),
                }
            }
            Event::Text(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(r) => {
                let name = r.into_inner();
                let resolved = match name.strip_prefix('#') {
                    Some(num) => {
                        let code = match num.strip_prefix('x') {
                            Some(hex) => u32::from_str_radix(hex, 16).ok(),
                            None => num.parse().ok(),
                        };
                        code.and_then(char::from_u32).map(String::from)
                    }
                    None => quick_xml::escape::resolve_predefined_entity(&name).map(String::from),
                };
                let resolved = resolved.ok_or_else(|| format!("unknown entity &{name};"))?;
                if let Some(n) = stack.last_mut() {
                    n.text.push_str(&resolved);
                }
            }
            Event::Eof => return Err("the answer ends before its root element closes".into()),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_answer_with_namespace_and_result_suffix() {
        let aws = r#"<?xml version="1.0" encoding="UTF-8"?>
<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><Key>k&amp;1</Key><UploadId>VXBsb2FkIElE</UploadId>
</InitiateMultipartUploadResult>"#;
        let root = parse(aws).unwrap();
        assert!(root.is("InitiateMultipartUpload"));
        assert_eq!(root.text_of("UploadId"), Some("VXBsb2FkIElE"));
        assert_eq!(root.text_of("Key"), Some("k&1"));
    }

    #[test]
    fn rclone_answer_without_suffix_or_namespace() {
        // rclone serve s3 (gofakes3) answers so; boto3 accepts it.
        let rclone = "<InitiateMultipartUpload><Bucket>b</Bucket><Key>k</Key>\
                      <UploadId>42</UploadId></InitiateMultipartUpload>";
        let root = parse(rclone).unwrap();
        assert!(root.is("InitiateMultipartUpload"));
        assert_eq!(root.text_of("UploadId"), Some("42"));
    }

    #[test]
    fn prefixed_names_match_by_local_name() {
        let prefixed = r#"<s3:ListBucketResult xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/">
<s3:Contents><s3:Key>a</s3:Key><s3:Size>3</s3:Size></s3:Contents>
<s3:Contents><s3:Key><![CDATA[b<c]]></s3:Key><s3:Size>4</s3:Size></s3:Contents>
<s3:IsTruncated>false</s3:IsTruncated><s3:Empty/></s3:ListBucketResult>"#;
        let root = parse(prefixed).unwrap();
        assert!(root.is("ListBucket"));
        let keys: Vec<_> = root
            .all("Contents")
            .filter_map(|c| c.text_of("Key"))
            .collect();
        assert_eq!(keys, ["a", "b<c"]);
        assert_eq!(root.text_of("IsTruncated"), Some("false"));
        assert!(root.child("Empty").is_some());
    }

    #[test]
    fn character_references_resolve() {
        let root = parse("<Error><Message>a&#x41;&#66;&lt;</Message></Error>").unwrap();
        assert_eq!(root.text_of("Message"), Some("aAB<"));
    }

    #[test]
    fn broken_answers_are_errors_not_panics() {
        for bad in [
            "",
            "<a>",
            "<a><b></a>",
            "</a>",
            "<a>&bogus;</a>",
            "not xml at all",
            &"<a>".repeat(100),
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
