use std::collections::HashMap;
use std::time::Duration;

/// Behaviour of the channels of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Publications retained per channel (0 disables history and recovery).
    pub history_size: usize,
    /// How long a publication stays in history.
    pub history_ttl: Duration,
    /// Whether clients (not only the server API) may publish.
    pub allow_publish: bool,
    /// Whether clients without a token may subscribe (and publish, if allowed).
    pub allow_anonymous: bool,
    /// Whether any connected client may subscribe without a grant for the channel
    /// (a token's `channels` claim or a subscription token).
    pub allow_subscribe_for_client: bool,
    /// Whether subscribers may read the channel's history.
    pub allow_history_for_client: bool,
    /// Whether subscribers may read the channel's presence.
    pub allow_presence_for_client: bool,
    /// Whether the channel tracks who is subscribed.
    pub presence: bool,
    /// Whether subscribers that ask for it get join and leave pushes.
    pub join_leave: bool,
    /// Whether every subscription recovers missed publications on resubscribe,
    /// even when the client did not ask for it.
    pub force_recovery: bool,
    /// Whether `name#user1,user2` channels admit only the users listed.
    pub allow_user_limited_channels: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            history_size: 1000,
            history_ttl: Duration::from_secs(600),
            allow_publish: false,
            allow_anonymous: false,
            allow_subscribe_for_client: false,
            allow_history_for_client: false,
            allow_presence_for_client: false,
            presence: false,
            join_leave: false,
            force_recovery: false,
            allow_user_limited_channels: false,
        }
    }
}

/// Channel options by namespace: `chat:room1` is in namespace `chat`; a name without
/// `:` is in the default namespace.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    default: ChannelOptions,
    named: HashMap<String, ChannelOptions>,
}

impl Namespaces {
    /// Namespaces with `default` for names without a namespace.
    pub fn new(default: ChannelOptions) -> Self {
        Namespaces {
            default,
            named: HashMap::new(),
        }
    }

    /// Adds (or replaces) a namespace.
    pub fn insert(&mut self, name: impl Into<String>, options: ChannelOptions) {
        self.named.insert(name.into(), options);
    }

    /// The options of `channel`, or `None` when its namespace is not configured.
    pub fn options(&self, channel: &str) -> Option<&ChannelOptions> {
        match channel.split_once(':') {
            Some((namespace, _)) => self.named.get(namespace),
            None => Some(&self.default),
        }
    }
}

/// The users a user-limited channel (`name#alice,bob`) admits, or `None` for an
/// ordinary channel.
pub fn channel_users(channel: &str) -> Option<impl Iterator<Item = &str>> {
    channel
        .split_once('#')
        .map(|(_, users)| users.split(',').filter(|u| !u.is_empty()))
}

/// Longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 255;

/// Checks that `channel` is a usable name: 1..=255 bytes, no control characters.
pub fn validate_channel(channel: &str) -> Result<(), &'static str> {
    if channel.is_empty() {
        Err("channel name is empty")
    } else if channel.len() > MAX_CHANNEL_LEN {
        Err("channel name is longer than 255 bytes")
    } else if channel.chars().any(char::is_control) {
        Err("channel name contains control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_part_before_the_colon() {
        let mut namespaces = Namespaces::default();
        let chat = ChannelOptions {
            allow_publish: true,
            ..ChannelOptions::default()
        };
        namespaces.insert("chat", chat.clone());
        assert_eq!(namespaces.options("chat:room"), Some(&chat));
        assert_eq!(
            namespaces.options("plain"),
            Some(&ChannelOptions::default())
        );
        assert_eq!(namespaces.options("nope:room"), None);
    }

    #[test]
    fn user_limited_channels_list_their_users() {
        let users: Vec<&str> = channel_users("dialog#alice,bob").unwrap().collect();
        assert_eq!(users, ["alice", "bob"]);
        assert!(channel_users("news").is_none());
    }

    #[test]
    fn channel_names_are_checked() {
        assert!(validate_channel("news:sport").is_ok());
        assert!(validate_channel("").is_err());
        assert!(validate_channel("a\nb").is_err());
        assert!(validate_channel(&"x".repeat(256)).is_err());
    }
}
