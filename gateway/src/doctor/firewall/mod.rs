//! Would the local packet filter let Cloudflare in? The rules of iptables ([`iptables`]) and
//! nftables ([`nft`]) read ([`read`]) into one plain [`Ruleset`] ([`rules`]), then walked as
//! the kernel walks them for a TCP SYN from each of Cloudflare's ranges to each listener's
//! port: chains in order, jumps, gotos, returns, the base chains' policies, the sets the rules
//! name (ipsets, nft sets). Not a text grep: a DROP for everything with an ACCEPT for the ranges
//! before it lets them in. [`judge`] says what that means, with the fix.

pub mod iptables;
pub mod judge;
pub mod nft;
pub mod read;
pub mod rules;

pub use judge::{beyond, judge, judge_bans, judge_reading, Ban, Target};
pub use rules::{Family, Ruleset, Span};

#[cfg(test)]
mod tests;
