//! The directories a session made, remembered until its end so that their
//! modes and times can be set last (files stored in them would change the
//! times; a read-only mode would stop the files).
//!
//! Only directories the session itself created are remembered (with the
//! directories above them, to find them again), as a tree of single names:
//! a node costs its name (at most 255 bytes) and some fifty bytes, whatever
//! the length of the path. A directory named again is the same node, so
//! repeated `Dir` frames cost nothing; one that existed already is never
//! remembered, and never takes the sender's mode or time.
//!
//! What is kept per directory (`M`, the sender's mode and time) is the
//! caller's: this table only knows names.

use std::collections::HashMap;

/// One directory: node 0 is the receiving directory itself.
struct Node<M> {
    parent: u32,
    /// Made by this session (else only on the way to one that was).
    created: bool,
    /// The sender's mode and time, when it sent a `Dir` for it.
    meta: Option<M>,
}

/// The directories a session made; at most `max` nodes.
pub(super) struct Dirs<M> {
    nodes: Vec<Node<M>>,
    children: HashMap<(u32, Box<[u8]>), u32>,
    max: usize,
}

/// Adding a node would go over the limit.
#[derive(Debug)]
pub(super) struct Full;

impl<M: Copy> Dirs<M> {
    pub(super) fn new(max: usize) -> Dirs<M> {
        Dirs { nodes: vec![Node { parent: 0, created: false, meta: None }], children: HashMap::new(), max }
    }

    /// Directories remembered (the receiving directory aside).
    pub(super) fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    /// The limit this table was made with.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    fn find(&self, parts: &[&[u8]]) -> Option<u32> {
        parts.iter().try_fold(0u32, |node, part| self.children.get(&(node, Box::from(*part))).copied())
    }

    /// Whether `parts` names a directory this session created.
    pub(super) fn created(&self, parts: &[&[u8]]) -> bool {
        !parts.is_empty() && self.find(parts).is_some_and(|n| self.nodes[n as usize].created)
    }

    /// Whether recording `parts` as created fits under the limit.
    pub(super) fn room_for(&self, parts: &[&[u8]]) -> Result<(), Full> {
        let mut node = 0u32;
        for (i, part) in parts.iter().enumerate() {
            match self.children.get(&(node, Box::from(*part))) {
                Some(&n) => node = n,
                None if self.len() + (parts.len() - i) > self.max => return Err(Full),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Records that the session created `parts` (the directories above it
    /// are remembered as the way there).
    pub(super) fn record_created(&mut self, parts: &[&[u8]]) -> Result<(), Full> {
        self.room_for(parts)?;
        let mut node = 0u32;
        for part in parts {
            node = match self.children.get(&(node, Box::from(*part))) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node { parent: node, created: false, meta: None });
                    self.children.insert((node, Box::from(*part)), n);
                    n
                }
            };
        }
        self.nodes[node as usize].created = true;
        Ok(())
    }

    /// Keeps the sender's mode and time for `parts`, if this session
    /// created it; false (and nothing kept) otherwise.
    pub(super) fn set_meta(&mut self, parts: &[&[u8]], meta: M) -> bool {
        match self.find(parts) {
            Some(n) if n != 0 && self.nodes[n as usize].created => {
                self.nodes[n as usize].meta = Some(meta);
                true
            }
            _ => false,
        }
    }

    /// Calls `f` with each created directory that has the sender's
    /// metadata, deepest first (a child is always recorded after its
    /// parent), one path at a time; the table is emptied.
    pub(super) fn drain_finished(&mut self, mut f: impl FnMut(&[u8], M)) {
        let mut names: Vec<&[u8]> = vec![&[]; self.nodes.len()];
        for ((_, name), &n) in &self.children {
            names[n as usize] = name;
        }
        let mut chain = Vec::new();
        let mut path = Vec::new();
        for n in (1..self.nodes.len()).rev() {
            let Some(meta) = self.nodes[n].meta.filter(|_| self.nodes[n].created) else { continue };
            chain.clear();
            let mut at = n;
            while at != 0 {
                chain.push(names[at]);
                at = self.nodes[at].parent as usize;
            }
            path.clear();
            for (i, name) in chain.iter().rev().enumerate() {
                if i > 0 {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
            }
            f(&path, meta);
        }
        drop(names);
        *self = Dirs::new(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(p: &str) -> Vec<&[u8]> {
        p.split('/').map(str::as_bytes).collect()
    }

    #[test]
    fn created_dirs_are_remembered_once_and_found_deepest_first() {
        let mut d = Dirs::new(4);
        let meta = |mtime: i64| mtime;
        d.record_created(&parts("a/b")).unwrap();
        assert_eq!(d.len(), 2, "a, on the way, and b");
        assert!(d.created(&parts("a/b")) && !d.created(&parts("a")) && !d.created(&[]));
        for i in 0..1000 {
            assert!(d.set_meta(&parts("a/b"), meta(i)));
        }
        assert!(!d.set_meta(&parts("a"), meta(5)), "not made by the session");
        assert!(!d.set_meta(&parts("x"), meta(5)));
        d.record_created(&parts("a/b/c")).unwrap();
        d.record_created(&parts("a")).unwrap();
        assert!(d.set_meta(&parts("a"), meta(1)) && d.set_meta(&parts("a/b/c"), meta(3)));
        assert_eq!(d.len(), 3);
        assert!(d.room_for(&parts("a/z")).is_ok());
        assert!(d.room_for(&parts("a/b/c")).is_ok(), "known already");
        assert!(d.room_for(&parts("y/z")).is_err(), "two more than the room left");
        let mut got = Vec::new();
        d.drain_finished(|p, m| got.push((p.to_vec(), m)));
        assert_eq!(got, [(b"a/b/c".to_vec(), 3), (b"a/b".to_vec(), 999), (b"a".to_vec(), 1)]);
        assert_eq!(d.len(), 0);
    }
}
