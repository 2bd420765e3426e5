//! Wire tests. Command lines are what npm `centrifuge` 5.8.0 and
//! `centrifuge-python` put on the wire (captured from the JS SDK against a stub
//! server); reply and push strings are what Centrifugo writes for the same values.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::*;
use crate::{ErrorCode, Payload};

fn raw(json: &str) -> Option<Box<RawValue>> {
    Some(RawValue::from_string(json.to_owned()).unwrap())
}

fn one_command(line: &str) -> Command {
    let mut commands = Codec::Json.decode_commands(line.as_bytes()).unwrap();
    assert_eq!(commands.len(), 1);
    commands.pop().unwrap()
}

fn encode_reply(reply: &Reply) -> String {
    let mut frame = Vec::new();
    Codec::Json.append_reply(&mut frame, reply);
    String::from_utf8(frame).unwrap()
}

fn encode_push(push: &Push) -> String {
    let mut frame = Vec::new();
    Codec::Json.append_push(&mut frame, push);
    String::from_utf8(frame).unwrap()
}

/// Decodes `text` as one server message and encodes it again.
fn reencode(text: &str) -> String {
    let mut messages = Codec::Json.decode_server_messages(text.as_bytes()).unwrap();
    assert_eq!(messages.len(), 1);
    serde_json::to_string(&messages.pop().unwrap()).unwrap()
}

#[test]
fn js_first_frame_is_connect_then_subscribe() {
    // The JS SDK pipelines its subscribes with connect, `id` last.
    let frame = concat!(
        r#"{"connect":{"token":"TOKEN","data":{"app":1},"name":"js"},"id":1}"#,
        "\n",
        r#"{"subscribe":{"channel":"news","join_leave":true,"flag":1},"id":2}"#
    );
    let commands = Codec::Json.decode_commands(frame.as_bytes()).unwrap();
    assert_eq!(commands.len(), 2);
    assert_eq!(commands[0].id, 1);
    let Some(Request::Connect(connect)) = &commands[0].request else {
        panic!("{:?}", commands[0]);
    };
    assert_eq!(connect.token, "TOKEN");
    assert_eq!(connect.name, "js");
    assert_eq!(
        connect.data.as_deref().map(RawValue::get),
        Some(r#"{"app":1}"#)
    );
    assert!(connect.subs.is_empty() && connect.version.is_empty());
    assert_eq!(commands[1].id, 2);
    let Some(Request::Subscribe(subscribe)) = &commands[1].request else {
        panic!("{:?}", commands[1]);
    };
    assert_eq!(subscribe.channel, "news");
    assert!(subscribe.join_leave && !subscribe.recover);
    assert_eq!(subscribe.flag, 1);
}

#[test]
fn js_resubscribe_recovers_from_its_position() {
    let command = one_command(
        r#"{"subscribe":{"channel":"news","join_leave":true,"flag":1,"recover":true,"offset":3,"epoch":"EP"},"id":4}"#,
    );
    let Some(Request::Subscribe(subscribe)) = command.request else {
        panic!("not a subscribe");
    };
    assert!(subscribe.recover);
    assert_eq!((subscribe.offset, subscribe.epoch.as_str()), (3, "EP"));
    assert_eq!(subscribe.kind, 0);
    assert!(subscribe.tf.is_none());
}

#[test]
fn python_connect_recovers_server_side_subscriptions() {
    let command = one_command(
        r#"{"id": 1, "connect": {"token": "T", "name": "python", "subs": {"chat": {"recover": true, "offset": 5, "epoch": "x"}}}}"#,
    );
    let Some(Request::Connect(connect)) = command.request else {
        panic!("not a connect");
    };
    let chat = &connect.subs["chat"];
    assert!(chat.recover);
    assert_eq!((chat.offset, chat.epoch.as_str()), (5, "x"));
}

#[test]
fn batch_of_three_with_trailing_newline_and_blank_lines() {
    let frame = concat!(
        r#"{"publish":{"channel":"news","data":{"hello":"world"}},"id":5}"#,
        "\n\r\n",
        r#"{"rpc":{"method":"m","data":{"a":1}},"id":6}"#,
        "\n",
        r#"{"history":{"channel":"news","since":{"offset":1,"epoch":"EP"},"limit":10,"reverse":true},"id":7}"#,
        "\n",
    );
    let commands = Codec::Json.decode_commands(frame.as_bytes()).unwrap();
    let ids: Vec<u32> = commands.iter().map(|c| c.id).collect();
    assert_eq!(ids, [5, 6, 7]);
    let methods: Vec<&str> = commands
        .iter()
        .map(|c| c.request.as_ref().unwrap().method())
        .collect();
    assert_eq!(methods, ["publish", "rpc", "history"]);
    let Some(Request::Publish(publish)) = &commands[0].request else {
        unreachable!()
    };
    assert_eq!(
        publish.data.as_deref().unwrap().get(),
        r#"{"hello":"world"}"#
    );
    let Some(Request::Rpc(rpc)) = &commands[1].request else {
        unreachable!()
    };
    assert_eq!(rpc.method, "m");
    let Some(Request::History(history)) = &commands[2].request else {
        unreachable!()
    };
    assert_eq!(history.limit, 10);
    assert!(history.reverse);
    assert_eq!(
        history.since,
        Some(StreamPosition {
            offset: 1,
            epoch: "EP".into()
        })
    );
    assert!(Codec::Json.decode_commands(b"").unwrap().is_empty());
    assert!(Codec::Json.decode_commands(b"\n \n").unwrap().is_empty());
}

#[test]
fn empty_object_is_a_pong_and_send_has_no_id() {
    assert!(one_command("{}").is_pong());
    assert!(one_command(" {} \r").is_pong());
    assert!(one_command(r#"{"id":0}"#).is_pong());
    let send = one_command(r#"{"send":{"data":{"fire":1}}}"#);
    assert_eq!(send.id, 0);
    assert!(!send.is_pong());
    assert!(matches!(send.request, Some(Request::Send(_))));
    // An id-less request other than send decodes; the server refuses it.
    let odd = one_command(r#"{"presence":{"channel":"a"}}"#);
    assert!(odd.id == 0 && !odd.is_pong());
}

#[test]
fn null_counts_as_absent() {
    // JS sends `limit: null` when the app passes it; Centrifugo reads it as 0.
    let command = one_command(
        r#"{"history":{"channel":"c","limit":null,"since":null,"reverse":null},"id":null,"connect":null,"ping":null,"subscribe":null}"#,
    );
    assert_eq!(command.id, 0);
    let Some(Request::History(history)) = command.request else {
        panic!("not history");
    };
    assert_eq!(
        (history.limit, history.since, history.reverse),
        (0, None, false)
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let command = one_command(
        r#"{"id":9,"subscribe":{"channel":"c","future":{"x":[1,2]},"tf":{"key":"k","cmp":"eq","val":"v"}},"extra":true}"#,
    );
    let Some(Request::Subscribe(subscribe)) = command.request else {
        panic!("not subscribe");
    };
    assert_eq!(
        subscribe.tf.unwrap().get(),
        r#"{"key":"k","cmp":"eq","val":"v"}"#
    );
}

#[test]
fn malformed_lines_say_where_and_why() {
    let frame = concat!("{}\n", r#"{"id":2,"ping":{}}"#, "\n", r#"{"id":3,"#);
    let error = Codec::Json.decode_commands(frame.as_bytes()).unwrap_err();
    assert_eq!(error.line(), 3);
    assert!(error.is_syntax());
    assert!(
        error.to_string().starts_with("line 3: malformed JSON: "),
        "{error}"
    );

    let cases: &[(&[u8], bool)] = &[
        (b"{} {}", true),
        (b"{\"id\":1,\"connect\":{}} x", true),
        (b"\xff\xfe", true),
        (b"{\"id\":1,\"publish\":{\"channel\":\"\xff\"}}", true),
        (b"[]", false),
        (b"null", false),
        (b"42", false),
        (b"{\"id\":\"1\",\"ping\":{}}", false),
        (b"{\"id\":-1,\"ping\":{}}", false),
        (b"{\"id\":4294967296,\"ping\":{}}", false),
        (b"{\"id\":1,\"subscribe\":{\"channel\":5}}", false),
        (b"{\"id\":1,\"subscribe\":[]}", false),
        (b"{\"id\":3}", false),
        (b"{\"id\":3,\"frobnicate\":{}}", false),
    ];
    for (line, syntax) in cases {
        let error = Codec::Json.decode_commands(line).unwrap_err();
        assert_eq!(error.line(), 1);
        assert_eq!(
            error.is_syntax(),
            *syntax,
            "{:?}: {error}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(error.is_structure(), !*syntax);
    }

    let error = Codec::Json
        .decode_commands(br#"{"id":1,"connect":{},"subscribe":{"channel":"a"}}"#)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: not a protocol message: command with several requests: connect, subscribe"
    );
    let error = Codec::Json.decode_commands(br#"{"id":3}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "line 1: not a protocol message: command 3 has no known request"
    );
}

#[test]
fn connect_reply_is_what_centrifugo_writes() {
    let reply = Reply::ok(
        1,
        ConnectResult {
            client: "c0f9a3e2".into(),
            version: "0.1.0".into(),
            ping: 25,
            pong: true,
            ..ConnectResult::default()
        },
    );
    let text = encode_reply(&reply);
    assert_eq!(
        text,
        r#"{"id":1,"connect":{"client":"c0f9a3e2","version":"0.1.0","ping":25,"pong":true}}"#
    );
    assert_eq!(reencode(&text), text);

    let full = Reply::ok(
        1,
        ConnectResult {
            client: "c".into(),
            expires: true,
            ttl: 60,
            data: raw(r#"{"motd":"hi"}"#),
            subs: BTreeMap::from([(
                "personal:42".to_owned(),
                SubscribeResult {
                    recoverable: true,
                    epoch: "e".into(),
                    offset: 4,
                    ..SubscribeResult::default()
                },
            )]),
            ping: 25,
            pong: true,
            session: "s".into(),
            node: "n".into(),
            ..ConnectResult::default()
        },
    );
    let text = encode_reply(&full);
    assert_eq!(
        text,
        concat!(
            r#"{"id":1,"connect":{"client":"c","expires":true,"ttl":60,"data":{"motd":"hi"},"#,
            r#""subs":{"personal:42":{"recoverable":true,"epoch":"e","offset":4}},"#,
            r#""ping":25,"pong":true,"session":"s","node":"n"}}"#
        )
    );
    assert_eq!(reencode(&text), text);
}

#[test]
fn subscribe_reply_with_recovered_publications() {
    let reply = Reply::ok(
        4,
        SubscribeResult {
            recoverable: true,
            epoch: "EP".into(),
            publications: vec![
                Publication {
                    data: raw(r#"{"n":4}"#),
                    offset: 4,
                    ..Publication::default()
                },
                Publication {
                    data: raw(r#"{"n":5}"#),
                    info: Some(ClientInfo {
                        user: "42".into(),
                        client: "c1".into(),
                        conn_info: raw(r#"{"name":"Ann"}"#),
                        chan_info: None,
                    }),
                    offset: 5,
                    tags: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
                },
            ],
            recovered: true,
            offset: 5,
            was_recovering: true,
            ..SubscribeResult::default()
        },
    );
    let text = encode_reply(&reply);
    assert_eq!(
        text,
        concat!(
            r#"{"id":4,"subscribe":{"recoverable":true,"epoch":"EP","publications":["#,
            r#"{"data":{"n":4},"offset":4},"#,
            r#"{"data":{"n":5},"info":{"user":"42","client":"c1","conn_info":{"name":"Ann"}},"offset":5,"tags":{"k":"v"}}"#,
            r#"],"recovered":true,"offset":5,"was_recovering":true}}"#
        )
    );
    assert_eq!(reencode(&text), text);

    // A first subscribe to a channel without history: nothing but `{}`.
    assert_eq!(
        encode_reply(&Reply::ok(2, SubscribeResult::default())),
        r#"{"id":2,"subscribe":{}}"#
    );
}

#[test]
fn other_replies_keep_the_fields_sdks_read() {
    let cases: Vec<(Reply, &str)> = vec![
        (Reply::ok(5, PublishResult {}), r#"{"id":5,"publish":{}}"#),
        (
            Reply::ok(6, UnsubscribeResult {}),
            r#"{"id":6,"unsubscribe":{}}"#,
        ),
        (Reply::ok(7, PingResult {}), r#"{"id":7,"ping":{}}"#),
        (Reply::ok(8, RpcResult::default()), r#"{"id":8,"rpc":{}}"#),
        (
            Reply::ok(8, RpcResult { data: raw("[1,2]") }),
            r#"{"id":8,"rpc":{"data":[1,2]}}"#,
        ),
        (
            Reply::ok(
                9,
                HistoryResult {
                    epoch: "EP".into(),
                    offset: 3,
                    ..HistoryResult::default()
                },
            ),
            r#"{"id":9,"history":{"publications":[],"epoch":"EP","offset":3}}"#,
        ),
        (
            Reply::ok(10, PresenceResult::default()),
            r#"{"id":10,"presence":{"presence":{}}}"#,
        ),
        (
            Reply::ok(
                10,
                PresenceResult {
                    presence: BTreeMap::from([(
                        "c1".to_owned(),
                        ClientInfo {
                            client: "c1".into(),
                            ..ClientInfo::default()
                        },
                    )]),
                },
            ),
            r#"{"id":10,"presence":{"presence":{"c1":{"user":"","client":"c1"}}}}"#,
        ),
        (
            Reply::ok(11, PresenceStatsResult::default()),
            r#"{"id":11,"presence_stats":{"num_clients":0,"num_users":0}}"#,
        ),
        (
            Reply::ok(
                12,
                RefreshResult {
                    client: "c".into(),
                    version: "0.1.0".into(),
                    expires: true,
                    ttl: 30,
                },
            ),
            r#"{"id":12,"refresh":{"client":"c","version":"0.1.0","expires":true,"ttl":30}}"#,
        ),
        (
            Reply::ok(13, SubRefreshResult::default()),
            r#"{"id":13,"sub_refresh":{}}"#,
        ),
        (
            Reply::error(14, ErrorCode::PermissionDenied),
            r#"{"id":14,"error":{"code":103,"message":"permission denied"}}"#,
        ),
        (
            Reply::error(15, ErrorCode::Internal),
            r#"{"id":15,"error":{"code":100,"message":"internal server error","temporary":true}}"#,
        ),
        (
            Reply::error(
                16,
                Error {
                    code: 112,
                    message: String::new(),
                    temporary: false,
                },
            ),
            r#"{"id":16,"error":{"code":112,"message":""}}"#,
        ),
    ];
    for (reply, expected) in cases {
        let text = encode_reply(&reply);
        assert_eq!(text, expected);
        assert_eq!(reencode(&text), text);
    }
}

#[test]
fn pushes_are_what_centrifugo_writes() {
    let info = ClientInfo {
        user: "42".into(),
        client: "c1".into(),
        conn_info: None,
        chan_info: raw(r#"{"role":"mod"}"#),
    };
    let cases: Vec<(Push, &str)> = vec![
        (
            Push::new(
                "news",
                PushBody::Publication(Publication {
                    data: raw(r#"{"n":3}"#),
                    offset: 3,
                    ..Publication::default()
                }),
            ),
            r#"{"push":{"channel":"news","pub":{"data":{"n":3},"offset":3}}}"#,
        ),
        (
            Push::new("news", PushBody::Join(Join { info: info.clone() })),
            r#"{"push":{"channel":"news","join":{"info":{"user":"42","client":"c1","chan_info":{"role":"mod"}}}}}"#,
        ),
        (
            Push::new("news", PushBody::Leave(Leave { info })),
            r#"{"push":{"channel":"news","leave":{"info":{"user":"42","client":"c1","chan_info":{"role":"mod"}}}}}"#,
        ),
        (
            Push::new(
                "news",
                PushBody::Unsubscribe(UnsubscribeCode::Server.into()),
            ),
            r#"{"push":{"channel":"news","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#,
        ),
        (
            Push::new(
                "news",
                PushBody::Subscribe(Subscribe {
                    recoverable: true,
                    epoch: "EP".into(),
                    offset: 9,
                    positioned: false,
                    data: None,
                }),
            ),
            r#"{"push":{"channel":"news","subscribe":{"recoverable":true,"epoch":"EP","offset":9}}}"#,
        ),
        (
            Push::new(
                "",
                PushBody::Message(Message {
                    data: raw(r#""hi""#),
                }),
            ),
            r#"{"push":{"message":{"data":"hi"}}}"#,
        ),
        (
            Push::new("", PushBody::Disconnect(DisconnectCode::Shutdown.into())),
            r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}"#,
        ),
        (
            Push::new("", PushBody::Disconnect(DisconnectCode::BadRequest.into())),
            r#"{"push":{"disconnect":{"code":3501,"reason":"bad request"}}}"#,
        ),
        (
            Push::new(
                "",
                PushBody::Refresh(Refresh {
                    expires: true,
                    ttl: 60,
                }),
            ),
            r#"{"push":{"refresh":{"expires":true,"ttl":60}}}"#,
        ),
        (
            Push::new(
                "",
                PushBody::Connect(ConnectResult {
                    client: "c".into(),
                    ping: 25,
                    ..ConnectResult::default()
                }),
            ),
            r#"{"push":{"connect":{"client":"c","ping":25}}}"#,
        ),
    ];
    for (push, expected) in cases {
        let text = encode_push(&push);
        assert_eq!(text, expected);
        assert_eq!(reencode(&text), text);
    }
}

#[test]
fn shared_publication_push_matches_the_general_encoder() {
    let publication = crate::Publication {
        offset: 17,
        data: Payload::json(b"{\"text\":\n\"a\\nb\"}").unwrap(),
        info: None,
    };
    let shared = Codec::Json
        .encode_publication_push("chat:room \"1\"", &publication, None)
        .unwrap();
    assert_eq!(
        shared,
        Bytes::from_static(
            br#"{"push":{"channel":"chat:room \"1\"","pub":{"data":{"text": "a\nb"},"offset":17}}}"#
        )
    );
    let general = Push::new(
        "chat:room \"1\"",
        PushBody::Publication(Publication::try_from(&publication).unwrap()),
    );
    assert_eq!(encode_push(&general).as_bytes(), &shared[..]);

    let info = ClientInfo {
        user: "u".into(),
        client: "c".into(),
        conn_info: raw("{\"a\":\n1}"),
        chan_info: None,
    };
    let first = crate::Publication {
        offset: 0,
        data: Payload::json(b"1").unwrap(),
        info: None,
    };
    let shared = Codec::Json
        .encode_publication_push("news", &first, Some(&info))
        .unwrap();
    assert_eq!(
        shared,
        Bytes::from_static(
            br#"{"push":{"channel":"news","pub":{"data":1,"info":{"user":"u","client":"c","conn_info":{"a": 1}}}}}"#
        )
    );
    let general = Push::new(
        "news",
        PushBody::Publication(Publication {
            info: Some(info),
            ..Publication::try_from(&first).unwrap()
        }),
    );
    assert_eq!(encode_push(&general).as_bytes(), &shared[..]);

    let binary = crate::Publication {
        offset: 1,
        data: Payload::Binary(Bytes::from_static(b"\x00\x01")),
        info: None,
    };
    assert_eq!(
        Codec::Json.encode_publication_push("news", &binary, None),
        Err(EncodeError::BinaryOverJson)
    );
}

#[test]
fn a_frame_concatenates_messages_with_newlines() {
    let codec = Codec::Json;
    let publication = crate::Publication {
        offset: 1,
        data: Payload::json(b"{\"n\":1}").unwrap(),
        info: None,
    };
    let shared = codec
        .encode_publication_push("news", &publication, None)
        .unwrap();
    let mut frame = Vec::new();
    codec.append_reply(
        &mut frame,
        &Reply::ok(
            1,
            ConnectResult {
                client: "c".into(),
                data: raw("{\n\"multi\":\r\n\"line\"\n}"),
                ..ConnectResult::default()
            },
        ),
    );
    codec.append_message(&mut frame, &shared);
    codec.append_message(&mut frame, codec.ping());
    codec.append_push(
        &mut frame,
        &Push::new(
            "",
            PushBody::Message(Message {
                data: raw("[\n1\n]"),
            }),
        ),
    );
    let text = String::from_utf8(frame.clone()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"id":1,"connect":{"client":"c","data":{ "multi":  "line" }}}"#,
            "\n",
            r#"{"push":{"channel":"news","pub":{"data":{"n":1},"offset":1}}}"#,
            "\n{}\n",
            r#"{"push":{"message":{"data":[ 1 ]}}}"#
        )
    );
    let messages = codec.decode_server_messages(&frame).unwrap();
    assert_eq!(messages.len(), 4);
    assert!(matches!(
        messages[0],
        ServerMessage::Reply(Reply {
            id: 1,
            result: Ok(ReplyResult::Connect(_))
        })
    ));
    assert!(
        matches!(&messages[1], ServerMessage::Push(Push { channel, body: PushBody::Publication(p) }) if channel == "news" && p.offset == 1)
    );
    assert!(matches!(messages[2], ServerMessage::Ping));
    assert!(matches!(
        messages[3],
        ServerMessage::Push(Push {
            body: PushBody::Message(_),
            ..
        })
    ));
    assert_eq!(JSON_PING, b"{}");
    assert_eq!(codec.name(), "json");
    assert!(!codec.is_binary());
}

#[test]
fn commands_encode_as_sdks_send_them() {
    let codec = Codec::Json;
    let mut frame = Vec::new();
    codec.append_command(
        &mut frame,
        &Command::new(
            1,
            Request::Connect(ConnectRequest {
                token: "T".into(),
                name: "herald-bench".into(),
                ..ConnectRequest::default()
            }),
        ),
    );
    codec.append_command(
        &mut frame,
        &Command::new(
            2,
            Request::Subscribe(SubscribeRequest {
                channel: "news".into(),
                recover: true,
                epoch: "EP".into(),
                offset: 7,
                ..SubscribeRequest::default()
            }),
        ),
    );
    codec.append_command(&mut frame, &Command::pong());
    codec.append_command(
        &mut frame,
        &Command::new(
            0,
            Request::Send(SendRequest {
                data: raw(r#"{"x":1}"#),
            }),
        ),
    );
    codec.append_command(
        &mut frame,
        &Command::new(
            3,
            Request::History(HistoryRequest {
                channel: "news".into(),
                limit: -1,
                since: Some(
                    crate::StreamPosition {
                        offset: 2,
                        epoch: String::new(),
                    }
                    .into(),
                ),
                reverse: false,
            }),
        ),
    );
    assert_eq!(
        String::from_utf8(frame.clone()).unwrap(),
        concat!(
            r#"{"id":1,"connect":{"token":"T","name":"herald-bench"}}"#,
            "\n",
            r#"{"id":2,"subscribe":{"channel":"news","recover":true,"epoch":"EP","offset":7}}"#,
            "\n{}\n",
            r#"{"send":{"data":{"x":1}}}"#,
            "\n",
            r#"{"id":3,"history":{"channel":"news","limit":-1,"since":{"offset":2}}}"#,
        )
    );
    let decoded = codec.decode_commands(&frame).unwrap();
    assert_eq!(decoded.len(), 5);
    assert!(decoded[2].is_pong());
    let Some(Request::Subscribe(subscribe)) = &decoded[1].request else {
        panic!("not subscribe");
    };
    assert_eq!((subscribe.offset, subscribe.epoch.as_str()), (7, "EP"));
}

#[test]
fn server_messages_are_checked() {
    let codec = Codec::Json;
    for bad in [
        r#"{"connect":{}}"#,
        r#"{"id":1}"#,
        r#"{"id":1,"push":{"channel":"a","pub":{}}}"#,
        r#"{"id":1,"error":{"code":100},"publish":{}}"#,
        r#"{"id":1,"publish":{},"rpc":{}}"#,
        r#"{"push":{"channel":"a"}}"#,
        r#"{"push":{"channel":"a","pub":{},"join":{}}}"#,
    ] {
        let error = codec.decode_server_messages(bad.as_bytes()).unwrap_err();
        assert!(error.is_structure(), "{bad}: {error}");
    }
    // Centrifugo's numeric channel ids (channel compaction) are read past.
    let messages = codec
        .decode_server_messages(br#"{"push":{"id":3,"pub":{"data":1,"offset":2}}}"#)
        .unwrap();
    assert!(matches!(&messages[0], ServerMessage::Push(p) if p.channel.is_empty()));
}

/// A tiny deterministic generator, so the no-panic test needs no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn no_input_panics() {
    let seeds: &[&[u8]] = &[
        br#"{"connect":{"token":"T","data":{"a":[1,2,{"b":null}]},"subs":{"c":{"recover":true,"offset":1}}},"id":1}"#,
        br#"{"id":2,"subscribe":{"channel":"x","recover":true,"epoch":"e","offset":18446744073709551615}}"#,
        br#"{"history":{"channel":"n","since":{"offset":1,"epoch":"E"},"limit":-1},"id":7}"#,
        br#"{"id":4,"subscribe":{"publications":[{"data":{},"info":{"user":"u"}}],"recovered":true}}"#,
        br#"{"push":{"channel":"c","pub":{"data":"\u00e9\ud83d\ude00","tags":{"a":"b"}}}}"#,
        b"{}\n{}\n",
    ];
    let codec = Codec::Json;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let alphabet = b"{}[]:,\"\\ \n0123456789-+.eEtrufalsnidpubconectyhsoryu\xff\xc3";
    for round in 0..20_000 {
        let seed = seeds[round % seeds.len()];
        let mut input = seed.to_vec();
        let edits = 1 + rng.next() % 4;
        for _ in 0..edits {
            let at = (rng.next() as usize) % (input.len() + 1);
            let byte = alphabet[(rng.next() as usize) % alphabet.len()];
            match rng.next() % 3 {
                0 if at < input.len() => input[at] = byte,
                1 if at < input.len() => {
                    input.remove(at);
                }
                _ => input.insert(at, byte),
            }
        }
        let _ = codec.decode_commands(&input);
        let _ = codec.decode_server_messages(&input);
    }
    let random: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    let _ = codec.decode_commands(&random);
    let _ = codec.decode_server_messages(&random);
}

#[test]
fn deep_nesting_is_an_error_or_raw_data_never_a_crash() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Inside a data field the nesting is skipped over, not recursed into.
    let in_data = format!(r#"{{"id":1,"publish":{{"channel":"a","data":{nested}}}}}"#);
    let commands = Codec::Json.decode_commands(in_data.as_bytes()).unwrap();
    let Some(Request::Publish(publish)) = &commands[0].request else {
        panic!("not publish");
    };
    assert_eq!(publish.data.as_deref().unwrap().get().len(), 2 * depth);
    let in_unknown = format!(r#"{{"id":1,"ping":{{"x":{nested}}}}}"#);
    assert!(Codec::Json.decode_commands(in_unknown.as_bytes()).is_ok());
    let in_place_of_a_struct = format!(r#"{{"id":1,"subscribe":{nested}}}"#);
    assert!(
        Codec::Json
            .decode_commands(in_place_of_a_struct.as_bytes())
            .is_err()
    );
    let unclosed = "{\"id\":1,\"publish\":{\"data\":".to_owned() + &"{\"a\":".repeat(depth);
    assert!(
        Codec::Json
            .decode_commands(unclosed.as_bytes())
            .unwrap_err()
            .is_syntax()
    );
}
