defmodule ZarrBridge.RemoteStoreOptionsTest do
  # The object-store options turned into the sidecar's wire store map
  # (pybridge/stores/remote.py), their refusals, and credentials kept out
  # of inspect and messages. Pure: no sidecar is started; a request that
  # would be sent goes to a server name nothing is registered under.
  use ExUnit.Case, async: true

  alias ZarrBridge.{Array, Error, Group, Store}

  @nowhere :remote_store_options_test_no_sidecar

  @secrets ["AKIASECRETID", "sEcReT/KeY+value", "SESSIONtoken", "azureKEY==", "sig-SAS"]

  describe "the wire map of each kind" do
    test "s3 with every option" do
      assert Store.build!(
               storage: :s3,
               bucket: "data",
               prefix: "/team/run1/",
               region: "eu-west-1",
               endpoint_url: "http://127.0.0.1:9000",
               access_key_id: "AKIASECRETID",
               secret_access_key: "sEcReT/KeY+value",
               session_token: "SESSIONtoken",
               engine: :fsspec,
               retry: [max_retries: 3, timeout_s: 2.5, initial_backoff_s: 0.05],
               storage_options: %{"config" => %{a: 1}, requester_pays: true}
             ) ==
               {:s3, "s3://data/team/run1",
                %{
                  "kind" => "s3",
                  "bucket" => "data",
                  "prefix" => "team/run1",
                  "region" => "eu-west-1",
                  "endpoint_url" => "http://127.0.0.1:9000",
                  "access_key_id" => "AKIASECRETID",
                  "secret_access_key" => "sEcReT/KeY+value",
                  "session_token" => "SESSIONtoken",
                  "engine" => "fsspec",
                  "retry" => %{
                    "max_retries" => 3,
                    "timeout_s" => 2.5,
                    "initial_backoff_s" => 0.05
                  },
                  "storage_options" => %{"requester_pays" => true, "config" => %{"a" => 1}}
                }}
    end

    test "s3 with only a bucket: the sidecar fills the rest from its environment" do
      assert Store.build!(storage: :s3, bucket: "data") ==
               {:s3, "s3://data", %{"kind" => "s3", "bucket" => "data"}}

      assert {:s3, "s3://data", %{"anonymous" => true, "retry" => %{"max_retries" => 0}}} =
               Store.build!(
                 storage: :s3,
                 bucket: "data",
                 anonymous: true,
                 retry: %{max_retries: 0}
               )
    end

    test "gcs" do
      assert Store.build!(
               storage: :gcs,
               bucket: "b",
               prefix: "p",
               project: "proj",
               token: "anon",
               endpoint_url: "http://127.0.0.1:4443"
             ) ==
               {:gcs, "gs://b/p",
                %{
                  "kind" => "gcs",
                  "bucket" => "b",
                  "prefix" => "p",
                  "project" => "proj",
                  "token" => "anon",
                  "endpoint_url" => "http://127.0.0.1:4443"
                }}

      assert {:gcs, _, %{"service_account_key" => "{}"}} =
               Store.build!(storage: :gcs, bucket: "b", service_account_key: "{}")
    end

    test "azure and ExZarr's azure_blob, with bucket: or container:" do
      expected =
        {:azure, "az://c/x",
         %{
           "kind" => "azure",
           "bucket" => "c",
           "prefix" => "x",
           "account_name" => "acct",
           "account_key" => "azureKEY=="
         }}

      assert Store.build!(
               storage: :azure,
               bucket: "c",
               prefix: "x",
               account_name: "acct",
               account_key: "azureKEY=="
             ) == expected

      assert {:azure_blob, "az://c/x", map} =
               Store.build!(
                 storage: :azure_blob,
                 container: "c",
                 prefix: "x",
                 account_name: "acct",
                 account_key: "azureKEY=="
               )

      assert map == Map.put(Map.delete(elem(expected, 2), "bucket"), "container", "c")

      assert {:azure, "az://c", %{"sas_token" => "sig-SAS", "connection_string" => "x"}} =
               Store.build!(
                 storage: :azure,
                 bucket: "c",
                 sas_token: "sig-SAS",
                 connection_string: "x"
               )
    end

    test "http, read-only by kind" do
      assert {:http, "https://example.org/data/a.zarr", store} =
               Store.build!(storage: :http, url: "https://example.org/data/a.zarr/")

      assert store == %{"kind" => "http", "url" => "https://example.org/data/a.zarr/"}
      assert Store.read_only?(store)
      assert {:error, %Error{code: :read_only}} = Store.check_writable(store, "r+")
      assert :ok = Store.check_writable(store, "r")
      assert :ok = Store.check_writable(store, nil)
    end

    test "url, with the options of the scheme's store" do
      assert Store.build!(storage: :url, url: "s3://b/p", region: "us-east-1", anonymous: true) ==
               {:url, "s3://b/p",
                %{
                  "kind" => "url",
                  "url" => "s3://b/p",
                  "region" => "us-east-1",
                  "anonymous" => true
                }}

      assert {:url, "gs://b", %{"token" => "anon"}} =
               Store.build!(storage: :url, url: "gs://b", token: "anon")

      assert {:url, "az://c/p", %{"account_name" => "a"}} =
               Store.build!(storage: :url, url: "az://c/p", account_name: "a")

      assert {:url, "file:///tmp/x.zarr", %{"url" => "file:///tmp/x.zarr"}} =
               Store.build!(storage: :url, url: "file:///tmp/x.zarr")

      assert {:url, "https://h/x", store} =
               Store.build!(storage: :url, url: "https://h/x", storage_options: %{"a" => 1})

      assert Store.read_only?(store)
      refute Store.read_only?(elem(Store.build!(storage: :url, url: "s3://b/p"), 2))
    end

    test "the local storages are as before" do
      assert Store.build!(storage: :memory, path: "m") ==
               {:memory, "m", %{"kind" => "memory", "name" => "m"}}

      assert Store.build!(path: "rel") ==
               {:filesystem, Path.expand("rel"),
                %{"kind" => "filesystem", "path" => Path.expand("rel")}}

      assert {:zip, _, %{"kind" => "zip"}} = Store.build!(storage: :zip, path: ~c"a.zip")
    end

    test "a group's members get the group's store: options/3 builds the same map again" do
      cases = [
        [
          storage: :s3,
          bucket: "b",
          prefix: "p",
          access_key_id: "AKIASECRETID",
          engine: :fsspec,
          retry: [max_retries: 1, timeout_s: 1.5],
          storage_options: %{"x" => %{"y" => 1}}
        ],
        [storage: :azure_blob, container: "c", account_name: "a", anonymous: true],
        [storage: :gcs, bucket: "b", token: "anon", project: "p"],
        [storage: :http, url: "http://h:1/x"],
        [storage: :url, url: "s3://b/p", region: "r"],
        [storage: :memory, path: "m"],
        [storage: :zip, path: "/tmp/a.zip"]
      ]

      for opts <- cases do
        {storage, path, store} = Store.build!(opts)
        assert Store.build!(Store.options(storage, path, store)) == {storage, path, store}
      end
    end

    test "the sidecar's store factory accepts each map and finds the same location" do
      # pybridge.stores.parse_spec validates a wire map without any request.
      maps =
        for opts <- [
              [
                storage: :s3,
                bucket: "b",
                prefix: "/p/q/",
                region: "r",
                access_key_id: "AKIASECRETID",
                secret_access_key: "sEcReT/KeY+value",
                engine: :fsspec,
                retry: [max_retries: 2]
              ],
              [
                storage: :gcs,
                bucket: "b",
                token: "anon",
                project: "p",
                endpoint_url: "http://h:1"
              ],
              [
                storage: :azure_blob,
                container: "c",
                prefix: "x",
                account_name: "a",
                account_key: "azureKEY==",
                anonymous: false
              ],
              [storage: :http, url: "https://example.org/data/a.zarr/"],
              [storage: :url, url: "gs://b/p", token: "anon"],
              [storage: :url, url: "az://c/p", sas_token: "sig-SAS"],
              [storage: :url, url: "file:///tmp/x.zarr"]
            ] do
          {_storage, location, store} = Store.build!(opts)
          {location, store}
        end

      out =
        ZarrBridge.Test.Python.run!("""
        from pybridge.stores.remote import parse_spec
        for m in #{ZarrBridge.Test.Python.literal(Enum.map(maps, &elem(&1, 1)))}:
            s = parse_spec(m, env={})
            print(s.location, s.read_only, sorted(s.credentials))
        """)

      expected =
        for {location, store} <- maps do
          creds = store |> Map.keys() |> Enum.filter(&(&1 in ~w(access_key_id secret_access_key
                   session_token token service_account_key account_name account_key sas_token
                   connection_string)))
          ro = if Store.read_only?(store), do: "True", else: "False"
          "#{location} #{ro} [#{creds |> Enum.sort() |> Enum.map_join(", ", &"'#{&1}'")}]"
        end

      assert String.split(out, "\n", trim: true) == expected
    end

    test "every public entry point takes the object-store options" do
      for fun <- [
            &ZarrBridge.open/1,
            &Group.open/1,
            &ZarrBridge.consolidate_metadata/1
          ] do
        assert_raise ArgumentError, ~r/unknown option/, fn ->
          fun.(storage: :s3, bucket: "b", region: "r", no_such_option: 1)
        end
      end
    end
  end

  describe "refusals" do
    test "a required option missing" do
      assert_raise ArgumentError, ~r/needs bucket:/, fn -> Store.build!(storage: :s3) end
      assert_raise ArgumentError, ~r/needs bucket:/, fn -> Store.build!(storage: :gcs) end
      assert_raise ArgumentError, ~r/needs url:/, fn -> Store.build!(storage: :http) end
      assert_raise ArgumentError, ~r/needs url:/, fn -> Store.build!(storage: :url) end
    end

    test "options that belong to another kind or to local stores" do
      assert_raise ArgumentError, ~r/\[:session_token\] do not apply to a :gcs store/, fn ->
        Store.build!(storage: :gcs, bucket: "b", session_token: "SESSIONtoken")
      end

      assert_raise ArgumentError, ~r/\[:region\] do not apply to a :azure store/, fn ->
        Store.build!(storage: :azure, bucket: "b", region: "r")
      end

      assert_raise ArgumentError, ~r/do not apply to a http:\/\/ url store/, fn ->
        Store.build!(storage: :url, url: "http://h/x", access_key_id: "AKIASECRETID")
      end

      assert_raise ArgumentError, ~r/\[:bucket\] do not apply to a s3:\/\/ url store/, fn ->
        Store.build!(storage: :url, url: "s3://b/p", bucket: "other")
      end

      assert_raise ArgumentError, ~r/url: is for the :http and :url storages/, fn ->
        Store.build!(storage: :s3, bucket: "b", url: "s3://b")
      end

      assert_raise ArgumentError, ~r/path: is for the :filesystem/, fn ->
        Store.build!(storage: :s3, bucket: "b", path: "/x")
      end

      assert_raise ArgumentError, ~r/\[:bucket\] are for object stores/, fn ->
        Store.build!(storage: :filesystem, path: "/x", bucket: "b")
      end

      assert_raise ArgumentError, ~r/storage must be one of/, fn ->
        Store.build!(storage: :ftp, url: "ftp://h")
      end
    end

    test "bad values" do
      assert_raise ArgumentError, ~r/:engine.*one of :obstore, :fsspec/, fn ->
        Store.build!(storage: :s3, bucket: "b", engine: "obstore")
      end

      assert_raise ArgumentError, ~r/:retry/, fn ->
        Store.build!(storage: :s3, bucket: "b", retry: [max_retries: -1])
      end

      assert_raise ArgumentError, ~r/:retry/, fn ->
        Store.build!(storage: :s3, bucket: "b", retry: [timeout_s: 0])
      end

      assert_raise ArgumentError, ~r/:retry/, fn ->
        Store.build!(storage: :s3, bucket: "b", retry: [backoff: 1])
      end

      assert_raise ArgumentError, ~r/:region.*a string/, fn ->
        Store.build!(storage: :s3, bucket: "b", region: :eu)
      end

      assert_raise ArgumentError, ~r/bucket must be a bucket name/, fn ->
        Store.build!(storage: :s3, bucket: "b/c")
      end

      assert_raise ArgumentError, ~r/give bucket: or container:/, fn ->
        Store.build!(storage: :azure, bucket: "b", container: "c")
      end
    end

    test "bad urls" do
      assert_raise ArgumentError, ~r/scheme must be one of/, fn ->
        Store.build!(storage: :url, url: "ftp://h/x")
      end

      assert_raise ArgumentError, ~r/needs an http/, fn ->
        Store.build!(storage: :http, url: "s3://b/x")
      end

      assert_raise ArgumentError, ~r/no query or fragment/, fn ->
        Store.build!(storage: :http, url: "https://h/x?sig=abc")
      end

      assert_raise ArgumentError, ~r/needs a host or bucket/, fn ->
        Store.build!(storage: :url, url: "s3:///x")
      end

      assert_raise ArgumentError, ~r/needs a path/, fn ->
        Store.build!(storage: :url, url: "file://")
      end
    end

    test "a message never shows a credential" do
      attempts = [
        fn ->
          Store.build!(storage: :s3, bucket: "b", secret_access_key: {:x, "sEcReT/KeY+value"})
        end,
        fn -> Store.build!(storage: :s3, bucket: "b", storage_options: [key: "AKIASECRETID"]) end,
        fn -> Store.build!(storage: :http, url: "https://user:sEcReT/KeY+value@h/x") end,
        fn -> Store.build!(storage: :gcs, bucket: "b", account_key: "azureKEY==") end,
        fn -> Store.build!(storage: :url, url: "https://h/x?sig=sig-SAS") end,
        fn ->
          Store.build!(
            storage: :s3,
            bucket: "b",
            storage_options: %{"client" => %{"password" => {:pw, "SESSIONtoken"}}}
          )
        end
      ]

      for attempt <- attempts do
        error = assert_raise ArgumentError, attempt
        for secret <- @secrets, do: refute(error.message =~ secret, error.message)
      end
    end
  end

  describe "read-only stores refuse writes before anything is sent" do
    test "create, group create, group open with :a, consolidate" do
      http = [storage: :http, url: "http://127.0.0.1:1/data", server: @nowhere]

      assert {:error, %Error{code: :read_only, message: message}} =
               ZarrBridge.create(http ++ [shape: {2}, dtype: :int32])

      assert message =~ "http://127.0.0.1:1/data"
      assert {:error, %Error{code: :read_only}} = Group.create(http)
      assert {:error, %Error{code: :read_only}} = Group.open(http ++ [mode: :a])
      assert {:error, %Error{code: :read_only}} = ZarrBridge.consolidate_metadata(http)

      assert {:error, %Error{code: :read_only}} =
               ZarrBridge.create(
                 storage: :url,
                 url: "https://h/x",
                 shape: {2},
                 dtype: :int8,
                 server: @nowhere
               )
    end

    test "writes on an array and a group of an http store" do
      {storage, path, store} = Store.build!(storage: :http, url: "http://127.0.0.1:1/d")
      array = %Array{metadata: nil, storage: storage, path: path, store: store, server: @nowhere}
      group = %Group{storage: storage, path: path, store: store, zarr_format: 3, server: @nowhere}

      assert {:error, %Error{code: :read_only}} = Array.put_attributes(array, %{"a" => 1})
      assert {:error, %Error{code: :read_only}} = Array.update_attributes(array, %{"a" => 1})
      assert {:error, %Error{code: :read_only}} = Array.resize(array, {4})
      assert {:error, %Error{code: :read_only}} = Array.write_chunk_raw(array, "c/0", "x")
      assert {:error, %Error{code: :read_only}} = Group.put_attributes(group, %{"a" => 1})

      assert {:error, %Error{code: :read_only}} =
               Group.create_array(group, "a", shape: {2}, dtype: :int8)

      assert {:error, %Error{code: :read_only}} = Group.create_group(group, "g")
    end
  end

  describe "inspect" do
    setup do
      {storage, path, store} =
        Store.build!(
          storage: :s3,
          bucket: "data",
          access_key_id: "AKIASECRETID",
          secret_access_key: "sEcReT/KeY+value",
          session_token: "SESSIONtoken",
          storage_options: %{
            "client_options" => %{"password" => "sig-SAS"},
            "key" => "azureKEY=="
          }
        )

      %{where: %{storage: storage, path: path, store: store}}
    end

    test "an array and a group show their store without credentials", %{where: where} do
      array = struct!(Array, Map.put(where, :metadata, nil))
      group = struct!(Group, Map.put(where, :zarr_format, 3))

      for shown <- [
            inspect(array),
            inspect(group),
            inspect([array, %{g: group}], limit: :infinity)
          ] do
        for secret <- @secrets, do: refute(shown =~ secret, shown)
        assert shown =~ "s3://data"
        assert shown =~ ~s("secret_access_key" => "***")
      end

      assert inspect(array) =~ "%ZarrBridge.Array{"
      assert inspect(group) =~ "%ZarrBridge.Group{"
      # The struct itself still holds them: the sidecar needs them.
      assert array.store["secret_access_key"] == "sEcReT/KeY+value"
    end

    test "an error from a refused write names the store, not its credentials", %{where: where} do
      store = Map.put(where.store, "read_only", true)

      assert {:error, %Error{} = error} = Store.check_writable(store, "w")
      shown = Exception.message(error) <> inspect(error)
      assert shown =~ "s3://data"
      for secret <- @secrets, do: refute(shown =~ secret, shown)
    end
  end

  describe "allowed_urls" do
    test "becomes one --allowed-url flag per prefix; none by default" do
      config = ZarrBridge.Sidecar.validate_options!(allowed_urls: ["s3://data", "https://h/z"])
      launch = %{python: "/bin/python", args: ["-m", "pybridge"], env: []}
      {_python, args, _env} = ZarrBridge.Sidecar.Launcher.port_command(launch, config)
      assert ["--allowed-url", "s3://data", "--allowed-url", "https://h/z"] -- args == []

      {_python, args, _env} =
        ZarrBridge.Sidecar.Launcher.port_command(launch, ZarrBridge.Sidecar.validate_options!([]))

      refute "--allowed-url" in args

      assert_raise ArgumentError, ~r/:allowed_urls/, fn ->
        ZarrBridge.Sidecar.validate_options!(allowed_urls: "s3://data")
      end
    end
  end

  test "mix zarr_bridge.info checks the object-store arguments before it starts a sidecar" do
    info = &Mix.Tasks.ZarrBridge.Info.run/1

    assert_raise Mix.Error, ~r/--engine must be obstore or fsspec/, fn ->
      info.(["bucket/prefix", "--storage", "s3", "--engine", "boto"])
    end

    assert_raise Mix.Error, ~r/needs an http/, fn -> info.(["s3://b/p", "--storage", "http"]) end

    assert_raise Mix.Error, ~r/are for object stores/, fn ->
      info.([System.tmp_dir!(), "--region", "eu-west-1"])
    end

    assert_raise Mix.Error, ~r/--storage must be/, fn -> info.(["x", "--storage", "ftp"]) end
  end

  test "the object-store error codes are known to the client" do
    for code <- ["access_denied", "no_such_bucket", "store_unavailable"] do
      error =
        Error.from_wire(%{"code" => code, "message" => "m", "details" => %{"url" => "s3://b"}})

      assert error.code == String.to_existing_atom(code)
      assert error.code in Error.codes()
    end
  end
end
