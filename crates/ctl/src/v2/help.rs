//! etcdctl 3.4.23's v2 help texts, captured from `ETCDCTL_API=2 etcdctl --help`
//! and `etcdctl <verb> --help` (urfave/cli templates, printed verbatim).

pub const APP: &str = r#"NAME:
   etcdctl - A simple command line client for etcd.

USAGE:
   etcdctl [global options] command [command options] [arguments...]

VERSION:
   3.4.23

COMMANDS:
   backup          backup an etcd directory
   cluster-health  check the health of the etcd cluster
   mk              make a new key with a given value
   mkdir           make a new directory
   rm              remove a key or a directory
   rmdir           removes the key if it is an empty directory or a key-value pair
   get             retrieve the value of a key
   ls              retrieve a directory
   set             set the value of a key
   setdir          create a new directory or update an existing directory TTL
   update          update an existing key with a given value
   updatedir       update an existing directory
   watch           watch a key for changes
   exec-watch      watch a key for changes and exec an executable
   member          member add, remove and list subcommands
   user            user add, grant and revoke subcommands
   role            role add, grant and revoke subcommands
   auth            overall auth controls
   help, h         Shows a list of commands or help for one command

GLOBAL OPTIONS:
   --debug                          output cURL commands which can be used to reproduce the request
   --no-sync                        don't synchronize cluster information before sending request
   --output simple, -o simple       output response in the given format (simple, `extended` or `json`) (default: "simple")
   --discovery-srv value, -D value  domain name to query for SRV records describing cluster endpoints
   --insecure-discovery             accept insecure SRV records describing cluster endpoints
   --peers value, -C value          DEPRECATED - "--endpoints" should be used instead
   --endpoint value                 DEPRECATED - "--endpoints" should be used instead
   --endpoints value                a comma-delimited list of machine addresses in the cluster (default: "http://127.0.0.1:2379,http://127.0.0.1:4001")
   --cert-file value                identify HTTPS client using this SSL certificate file
   --key-file value                 identify HTTPS client using this SSL key file
   --ca-file value                  verify certificates of HTTPS-enabled servers using this CA bundle
   --username value, -u value       provide username[:password] and prompt if password is not supplied.
   --timeout value                  connection timeout per request (default: 2s)
   --total-timeout value            timeout for the command execution (except watch) (default: 5s)
   --help, -h                       show help
   --version, -v                    print the version
"#;

/// A verb's help, for the verbs keelctl implements.
pub fn verb(name: &str) -> Option<&'static str> {
    Some(match name {
        "set" => {
            r#"NAME:
   etcdctl set - set the value of a key

USAGE:
   etcdctl set [command options] <key> <value>

DESCRIPTION:
   Set sets the value of a key.

   When <value> begins with '-', <value> is interpreted as a flag.
   Insert '--' for workaround:

   $ set -- <key> <value>

OPTIONS:
   --ttl value              key time-to-live in seconds (default: 0)
   --swap-with-value value  previous value
   --swap-with-index value  previous index (default: 0)
   
"#
        }
        "get" => {
            r#"NAME:
   etcdctl get - retrieve the value of a key

USAGE:
   etcdctl get [command options] <key>

OPTIONS:
   --sort        returns result in sorted order
   --quorum, -q  require quorum for get request
   
"#
        }
        "update" => {
            r#"NAME:
   etcdctl update - update an existing key with a given value

USAGE:
   etcdctl update [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        "mk" => {
            r#"NAME:
   etcdctl mk - make a new key with a given value

USAGE:
   etcdctl mk [command options] <key> <value>

OPTIONS:
   --in-order   create in-order key under directory <key>
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        "mkdir" => {
            r#"NAME:
   etcdctl mkdir - make a new directory

USAGE:
   etcdctl mkdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        "setdir" => {
            r#"NAME:
   etcdctl setdir - create a new directory or update an existing directory TTL

USAGE:
   etcdctl setdir [command options] <key>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        "updatedir" => {
            r#"NAME:
   etcdctl updatedir - update an existing directory

USAGE:
   etcdctl updatedir [command options] <key> <value>

OPTIONS:
   --ttl value  key time-to-live in seconds (default: 0)
   
"#
        }
        "rm" => {
            r#"NAME:
   etcdctl rm - remove a key or a directory

USAGE:
   etcdctl rm [command options] <key>

OPTIONS:
   --dir               removes the key if it is an empty directory or a key-value pair
   --recursive, -r     removes the key and all child keys(if it is a directory)
   --with-value value  previous value
   --with-index value  previous index (default: 0)
   
"#
        }
        "rmdir" => {
            r#"NAME:
   etcdctl rmdir - removes the key if it is an empty directory or a key-value pair

USAGE:
   etcdctl rmdir <key>
"#
        }
        "ls" => {
            r#"NAME:
   etcdctl ls - retrieve a directory

USAGE:
   etcdctl ls [command options] [key]

OPTIONS:
   --sort           returns result in sorted order
   --recursive, -r  returns all key names recursively for the given path
   -p               append slash (/) to directories
   --quorum, -q     require quorum for get request
   
"#
        }
        "watch" => {
            r#"NAME:
   etcdctl watch - watch a key for changes

USAGE:
   etcdctl watch [command options] <key>

OPTIONS:
   --forever, -f        forever watch a key until CTRL+C
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      returns all values for key and child keys
   
"#
        }
        "exec-watch" => {
            r#"NAME:
   etcdctl exec-watch - watch a key for changes and exec an executable

USAGE:
   etcdctl exec-watch [command options] <key> <command> [args...]

OPTIONS:
   --after-index value  watch after the given index (default: 0)
   --recursive, -r      watch all values for key and child keys
   
"#
        }
        _ => return None,
    })
}
