//! The client's error codes are the server's: every code of the server's table
//! (`runbase_domain::ErrorCode::ALL`) has a variant here with the same status, and the client
//! knows no code the server lacks. A code added to the server without one here fails this test.

use runbase_client::ErrorCode;
use runbase_domain::ErrorCode as ServerCode;

#[test]
fn every_server_code_has_a_client_variant_with_its_status() {
    for server in ServerCode::ALL {
        let client = ErrorCode::parse(server.as_str());
        assert_ne!(
            client,
            ErrorCode::Unknown,
            "the server's code {:?} has no variant in runbase_client::ErrorCode",
            server.as_str()
        );
        assert_eq!(
            client.status(),
            Some(server.status()),
            "status of {}",
            server.as_str()
        );
    }
}

#[test]
fn the_client_knows_no_code_the_server_lacks() {
    for client in ErrorCode::ALL {
        assert!(
            ServerCode::ALL
                .iter()
                .any(|s| s.as_str() == client.as_str()),
            "{} is not in the server's table",
            client.as_str()
        );
    }
    assert_eq!(ErrorCode::ALL.len(), ServerCode::ALL.len());
}
