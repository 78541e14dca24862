//! `alarm list|disarm`.

use keel_client::proto::etcdserverpb::alarm_request::AlarmAction;
use keel_client::proto::etcdserverpb::{AlarmRequest, AlarmResponse};

use super::endpoint::{protobuf, unsupported, Obj};
use super::{Command, Group};
use crate::error::Failure;
use crate::global::Context;
use crate::printer::Format;

pub const ALARM: Group = Group {
    name: "alarm",
    short: "Alarm related commands",
    usage: "alarm <subcommand>",
    long: "",
    flags: &[],
    subcommands: &[&DISARM, &LIST],
};

const DISARM: Command =
    Command { name: "disarm", short: "Disarms all alarms", usage: "disarm", long: "", flags: &[], run: disarm };

const LIST: Command =
    Command { name: "list", short: "Lists all alarms", usage: "list", long: "", flags: &[], run: list };

fn list(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let printer = ctx.setup()?;
    let request = AlarmRequest { action: AlarmAction::Get as i32, ..Default::default() };
    let r = ctx.call(|client| async move { client.alarm(request).await })?;
    print(ctx, printer.format, &r)
}

/// etcdctl's `alarm disarm`: lists the alarms, then clears each one.
fn disarm(ctx: &mut Context<'_>, _args: &[String]) -> Result<(), Failure> {
    let printer = ctx.setup()?;
    let request = AlarmRequest { action: AlarmAction::Get as i32, ..Default::default() };
    let listed = ctx.call(|client| async move { client.alarm(request).await })?;
    // clientv3's AlarmDisarm answers with the cleared alarms only, no header.
    let mut r = AlarmResponse::default();
    for alarm in listed.alarms {
        let request =
            AlarmRequest { action: AlarmAction::Deactivate as i32, member_id: alarm.member_id, alarm: alarm.alarm };
        let cleared = ctx.call(|client| async move { client.alarm(request).await })?;
        r.alarms.extend(cleared.alarms);
    }
    print(ctx, printer.format, &r)
}

fn alarm_name(alarm: i32) -> String {
    match alarm {
        0 => "NONE".to_owned(),
        1 => "NOSPACE".to_owned(),
        2 => "CORRUPT".to_owned(),
        other => other.to_string(),
    }
}

fn print(ctx: &mut Context<'_>, format: Format, r: &AlarmResponse) -> Result<(), Failure> {
    let out = render(format, r)?;
    if format == Format::Protobuf {
        protobuf(ctx.io.stdout, r);
    } else {
        let _ = ctx.io.stdout.write_all(out.as_bytes());
    }
    Ok(())
}

/// The alarm printers; protobuf is written by the caller.
pub fn render(format: Format, r: &AlarmResponse) -> Result<String, Failure> {
    Ok(match format {
        // gogo's `String()` of an AlarmMember, as `%+v` prints it.
        Format::Simple => {
            r.alarms.iter().map(|a| format!("memberID:{} alarm:{} \n", a.member_id, alarm_name(a.alarm))).collect()
        }
        Format::Json => {
            let mut o = Obj::new();
            o.header(&r.header);
            if !r.alarms.is_empty() {
                let items: Vec<String> = r
                    .alarms
                    .iter()
                    .map(|a| {
                        let mut item = Obj::new();
                        item.num("memberID", a.member_id).num("alarm", a.alarm);
                        item.done()
                    })
                    .collect();
                o.raw("alarms", format!("[{}]", items.join(",")));
            }
            o.done() + "\n"
        }
        Format::Fields => {
            // etcdctl 3.4 dereferences the header without checking it.
            let Some(_) = r.header else {
                return Err(Failure::Panic(
                    "runtime error: invalid memory address or nil pointer dereference\n[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0xb9181e]".to_owned(),
                ));
            };
            let mut s = super::endpoint::fields_header(&r.header);
            for a in &r.alarms {
                s.push_str(&format!("\"MemberID\" : {}\n\"AlarmType\" : {}\n\n", a.member_id, alarm_name(a.alarm)));
            }
            s
        }
        Format::Table => return Err(unsupported("table")),
        Format::Protobuf => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_client::proto::etcdserverpb::AlarmMember;

    // Expected strings captured from etcdctl 3.4.23 against etcd 3.4.23.
    #[test]
    fn alarm_formats() {
        let none = AlarmResponse::default();
        assert_eq!(render(Format::Simple, &none).unwrap(), "");
        assert_eq!(render(Format::Json, &none).unwrap(), "{}\n");
        assert!(matches!(render(Format::Table, &none), Err(Failure::Exit { code: 4, .. })));
        assert!(matches!(render(Format::Fields, &none), Err(Failure::Panic(_))));
        let one = AlarmResponse { header: None, alarms: vec![AlarmMember { member_id: 88510569177049810, alarm: 1 }] };
        assert_eq!(render(Format::Simple, &one).unwrap(), "memberID:88510569177049810 alarm:NOSPACE \n");
        assert_eq!(
            render(Format::Json, &one).unwrap(),
            "{\"alarms\":[{\"memberID\":88510569177049810,\"alarm\":1}]}\n"
        );
    }
}
