"""dynamongo quickstart: the manual's User model, end to end.

    python examples/quickstart.py

With an endpoint configured (AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL or
the AWS profile's endpoint_url), it runs against that DynamoDB (DynamoDB
Local, dynalite, moto server); with AWS credentials, against real AWS (it
makes a small table and deletes it at the end). With neither, it starts a
local DynamoDB in this process (moto's server, from
``pip install 'moto[server]'``) and says so.
"""

import datetime
import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

from dynamongo import (  # noqa: E402
    Connection, DateTimeField, EmailField, IntField, ListField, Model,
    StringField)


class User(Model):
    __table__ = "users"
    __hash_key__ = "email"

    email = EmailField(required=True)
    name = StringField(required=True)
    year_of_birth = IntField(max_value=2018, min_value=1900)
    cities_visited = ListField(StringField)
    created_at = DateTimeField(default=datetime.datetime.now)


def choose_backend():
    """Use the configured endpoint or AWS account, else start moto."""
    settings = Connection.settings()  # what dynamongo itself will use
    sources = settings["sources"]
    if settings["endpoint_url"]:
        print(f"Using the DynamoDB at {settings['endpoint_url']} "
              f"(from {sources['endpoint_url']})")
        return None
    import boto3.session

    session = boto3.session.Session(profile_name=settings["profile_name"])
    if session.get_credentials() is not None:
        print(f"Using AWS DynamoDB with your configured credentials, region "
              f"{settings['region']} (from {sources['region']})")
        return None
    import logging

    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        sys.exit("No DynamoDB endpoint or AWS credentials are configured, "
                 "and moto is not installed to run a local one:\n"
                 "    pip install 'moto[server]'\n"
                 "or set AWS_ENDPOINT_URL_DYNAMODB to a local DynamoDB, or "
                 "configure AWS credentials.")

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port,
                                verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    Connection.set_config(endpoint_url=endpoint, access_key_id="local",
                          secret_access_key="local", region="us-east-1")
    print(f"No AWS endpoint or credentials configured: using a local "
          f"DynamoDB started in this process (moto server at {endpoint})")
    return server


def main():
    server = choose_backend()
    # A prefix of its own, so the table it deletes at the end is its own.
    Connection.set_config(table_prefix="dynamongo-quickstart-")
    print(f"Creating table {User.table_name()} ...")
    try:
        User.create_table()
    except BaseException:
        if server is not None:
            server.stop()
        raise
    try:

        john = User.save_one({
            "email": "johndoe@gmail.com",
            "name": "John Doe",
            "year_of_birth": 1990,
            "cities_visited": ["Nairobi", "New York"],
        })
        jane = User.save_one({"email": "jane@gmail.com", "name": "Jane Doe"})
        print("Saved:", john)
        print("Saved:", jane)

        user = User.get_one(User.email == "johndoe@gmail.com")
        print("Read back:", user.to_dict())

        result = User.save_many([
            {"email": f"user{number}@example.com", "name": f"User {number}",
             "year_of_birth": 1980 + number,
             "cities_visited": ["Nairobi"] if number % 2 else ["Lagos"]}
            for number in range(10)])
        print(f"save_many: {result.success_count} saved, "
              f"{result.fail_count} failed")

        visited = User.get_many(User.cities_visited.contains("Nairobi"))
        print("Visited Nairobi:", sorted(user.email for user in visited))
        young = User.get_many((User.year_of_birth > 1985)
                              & ~User.cities_visited.contains("Nairobi"))
        print("Born after 1985, never in Nairobi:",
              sorted(user.email for user in young))

        updated = User.update_one(User.email == "johndoe@gmail.com", [
            User.name.set("John D."),
            User.cities_visited.append("Kampala"),
            User.year_of_birth.add(1)])
        print("Updated:", updated.name, updated.year_of_birth,
              updated.cities_visited)

        deleted = User.delete_one((User.email == "jane@gmail.com")
                                  & User.year_of_birth.not_exists())
        print("Deleted:", deleted.email)
        result = User.delete_many(User.name.begins_with("User "))
        print(f"delete_many: {result.success_count} deleted")
        left = User.get_many(User.email.exists())
        print("Left:", [user.email for user in left])
    finally:
        print(f"Deleting table {User.table_name()} ...")
        User.delete_table()
        if server is not None:
            server.stop()
    print("Done.")


if __name__ == "__main__":
    main()
