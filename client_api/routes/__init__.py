"""Every client-server endpoint, grouped by area; each module has `register(router)`."""
from client_api.http import Router
from client_api.routes import (
    account,
    account_data,
    admin,
    admin_export,
    appservice,
    client_misc,
    devices,
    directory,
    key_backup,
    keys,
    legacy_events,
    media,
    notifications,
    openid,
    profile,
    push_rules,
    relations,
    reports,
    room_events,
    rooms,
    search,
    sliding_sync,
    spaces,
    sync,
    synapse_admin_media,
    synapse_admin_reports,
    synapse_admin_rooms,
    synapse_admin_users,
    thirdparty,
    user_directory,
    versions,
)


def register_all_routes(router: Router) -> None:
    for module in (versions, account, devices, profile, rooms, room_events, directory,
                   account_data, user_directory, sync, sliding_sync, search,
                   push_rules, client_misc, keys, key_backup, admin, appservice, spaces, reports,
                   openid, thirdparty, legacy_events, media, relations,
                   admin_export, synapse_admin_users, synapse_admin_rooms, synapse_admin_reports,
                   synapse_admin_media, notifications):
        module.register(router)
