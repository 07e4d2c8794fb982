//! capsa-network: the network companion of capsa's high half (issue 17).
//!
//! A container on a bridge network gets:
//! - a network namespace made and bind-mounted by us under a run dir ([`netns`]), which the
//!   runtime joins through `linux.namespaces[network].path`;
//! - a veth pair whose host end is a port of the network's bridge and whose other end is `eth0`
//!   inside that namespace, with its address, `lo` up and a default route via the bridge's
//!   gateway address ([`bridge`], spoken over rtnetlink by [`rtnl`], no `ip` binary);
//! - an address leased from the network's subnet in the store's database ([`ipam`]);
//! - masquerade out of the subnet and DNAT for published ports, tagged per container in
//!   capsa's own nftables table ([`firewall`], spoken over netlink by [`nftnl`], no `nft` binary).
//!
//! [`container`] puts these together: `attach` makes everything (undoing what it made on any
//! failure) and `detach` removes everything a container was given, also after a crash, from
//! the container id alone.
//!
//! Every operation takes the network namespace it works in (the "host" side) as a [`netns::Ns`]:
//! the real host's in capsactl, a namespace of the test's own in the tests. The library never
//! prints.

pub mod bridge;
pub mod container;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod netns;
pub mod nftnl;
pub mod rtnl;

pub use error::{Error, Result};
