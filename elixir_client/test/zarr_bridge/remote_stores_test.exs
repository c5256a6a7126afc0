defmodule ZarrBridge.RemoteStoresTest do
  # Object stores through a real sidecar, against the real test servers of
  # tests/servers (moto, gcp-storage-emulator, Azurite, a Range-honouring
  # static HTTP server), each started once for this module by
  # `python -m tests.servers KIND` and stopped when its stdin closes.
  # zarr-python, with s3fs/gcsfs/adlfs/fsspec's HTTP file system of its own
  # (not the sidecar's store factory), is the other side.
  #
  # Tagged :remote (run by default; `mix test --exclude remote` skips them).
  use ExUnit.Case, async: false

  @moduletag :remote
  @moduletag timeout: 300_000

  alias ZarrBridge.{Array, Error, Group, NDArray, Sidecar}
  alias ZarrBridge.Test.{JSON, Python, SidecarCase}

  @repo Path.expand("../../..", __DIR__)
  @bucket "zb-elixir"

  setup_all do
    servers = Map.new(~w(s3 gcs azure http), fn kind -> {kind, start_server!(kind)} end)
    make_bucket!(servers["s3"], @bucket)
    make_bucket!(servers["gcs"], @bucket)
    make_bucket!(servers["azure"], @bucket)
    %{servers: servers}
  end

  setup %{servers: servers} do
    %{run: "run-#{System.unique_integer([:positive])}", servers: servers}
  end

  # -- S3: the README's first example and every operation -----------------------

  describe "s3" do
    test "the README's first example with storage: :s3", %{servers: servers, run: run} do
      s3 = store_opts(servers["s3"], prefix: run)

      {:ok, array} =
        ZarrBridge.create(
          [shape: {500, 500}, chunks: {50, 50}, dtype: :int32, compressor: :zlib, zarr_version: 2] ++
            s3 ++ [node: "results"]
        )

      assert array.path == "s3://#{@bucket}/#{run}"
      assert :ok = Array.set_slice(array, {{1, 2}, {3, 4}}, start: {0, 0}, stop: {2, 2})
      assert :ok = Array.put_attributes(array, %{"units" => "counts"})

      {:ok, array} = ZarrBridge.open(s3 ++ [node: "results"])
      assert {:ok, {{1, 2, 0}, {3, 4, 0}}} = Array.get_slice(array, start: {0, 0}, stop: {2, 3})
      assert {:ok, %{"units" => "counts"}} = Array.get_attributes(array)

      {:ok, root} = Group.create(s3 ++ [node: "archive"])
      {:ok, _} = Group.create_array(root, "labels/names", shape: {2}, dtype: :string)
      {:ok, names} = ZarrBridge.open(s3 ++ [node: "archive/labels/names"])
      assert names.metadata.shape == {2}
      assert {:ok, [{"labels", :group}]} = Group.members(root)

      {:ok, consolidated} = ZarrBridge.consolidate_metadata(s3 ++ [node: "archive"])
      assert consolidated.consolidated
    end

    test "sharded arrays, append, resize and raw chunks", %{servers: servers, run: run} do
      s3 = store_opts(servers["s3"], prefix: run)
      values = for i <- 0..(64 * 48 - 1), do: i * 1.5
      nd = NDArray.from_list!(values, {64, 48}, :float64)

      {:ok, array} =
        ZarrBridge.create(
          [shape: {64, 48}, chunks: {8, 8}, shards: {32, 24}, dtype: :float64, compressor: :zstd] ++
            s3 ++ [node: "sharded"]
        )

      assert :ok = Array.write(array, nd)
      assert {:ok, ^nd} = Array.read(array)

      {:ok, keys} = Array.chunk_keys(array)
      assert length(keys) == 4
      {:ok, raw} = Array.read_chunk_raw(array, hd(keys))

      {:ok, copy} =
        ZarrBridge.create(
          [shape: {64, 48}, chunks: {8, 8}, shards: {32, 24}, dtype: :float64, compressor: :zstd] ++
            s3 ++ [node: "copy"]
        )

      assert :ok = Array.write_chunk_raw(copy, hd(keys), raw)
      assert {:ok, ^raw} = Array.read_chunk_raw(copy, hd(keys))

      {:ok, grown} = Array.append(array, nd)
      assert grown.metadata.shape == {128, 48}
      assert {:ok, back} = Array.read(grown, start: {64, 0}, stop: {128, 48})
      assert back == nd

      {:ok, small} = Array.resize(grown, {10, 48})
      assert small.metadata.shape == {10, 48}
      {:ok, reopened} = ZarrBridge.open(s3 ++ [node: "sharded"])
      assert reopened.metadata.shape == {10, 48}
    end

    test "zarr-python writes, Elixir reads exactly, and back", %{servers: servers, run: run} do
      ep = servers["s3"]
      s3 = store_opts(ep, prefix: run)

      digest =
        python!(
          ep,
          """
          store = remote_store(f'{BUCKET}/{RUN}')
          a = zarr.create_array(store, name='py', shape=(37, 23), chunks=(10, 10), dtype='<i8',
                                compressors=zarr.codecs.ZstdCodec(level=3), zarr_format=3)
          a[:] = np.arange(37 * 23, dtype='<i8').reshape(37, 23) * 7 - 1000
          print(sha(dump(a[:])))
          """,
          run
        )

      {:ok, array} = ZarrBridge.open(s3 ++ [node: "py"])
      {:ok, nd} = Array.read(array)
      assert sha(Python.dump(nd)) == String.trim(digest)

      {:ok, mine} =
        ZarrBridge.create(
          [shape: {19, 5}, chunks: {4, 5}, dtype: :float32, zarr_version: 2] ++
            s3 ++ [node: "ex"]
        )

      data = NDArray.from_list!(for(i <- 0..94, do: i / 4), {19, 5}, :float32)
      assert :ok = Array.write(mine, data)

      theirs =
        python!(
          ep,
          """
          store = remote_store(f'{BUCKET}/{RUN}')
          print(sha(dump(zarr.open_array(store, path='ex', mode='r')[:])))
          """,
          run
        )

      assert String.trim(theirs) == sha(Python.dump(data))
    end

    test "a missing bucket is :no_such_bucket", %{servers: servers} do
      opts =
        store_opts(servers["s3"],
          bucket: "zb-no-such-bucket-#{System.unique_integer([:positive])}"
        )

      assert {:error, %Error{code: :no_such_bucket} = error} =
               ZarrBridge.open(opts ++ [node: "a"])

      refute Exception.message(error) =~ servers["s3"]["options"]["secret_access_key"]
    end

    test "wrong credentials are :access_denied, and the message hides them" do
      ep = start_server!("s3_auth")
      make_bucket!(ep, @bucket)

      opts =
        store_opts(ep, [])
        |> Keyword.put(:secret_access_key, "WRONG-secret-value-123")

      assert {:error, %Error{code: :access_denied} = error} =
               ZarrBridge.create(opts ++ [node: "a", shape: {2}, dtype: :int8])

      refute Exception.message(error) =~ "WRONG-secret-value-123"
      refute inspect(error) =~ "WRONG-secret-value-123"

      # The right ones work on the same sidecar.
      assert {:ok, _} =
               ZarrBridge.create(store_opts(ep, []) ++ [node: "a", shape: {2}, dtype: :int8])
    end

    test "a stopped server is :store_unavailable and the sidecar keeps serving", %{run: run} do
      {ep, port} = start_server_port!("s3")
      make_bucket!(ep, @bucket)
      opts = store_opts(ep, prefix: run, retry: [max_retries: 1, timeout_s: 2.0])

      {:ok, array} = ZarrBridge.create(opts ++ [node: "a", shape: {4}, dtype: :int32])
      assert :ok = Array.set_slice(array, {1, 2, 3, 4})
      stop_server!(port)

      assert {:error, %Error{code: :store_unavailable}} = Array.read(array, timeout: 60_000)

      assert {:error, %Error{code: :store_unavailable}} =
               ZarrBridge.open(opts ++ [node: "a", timeout: 60_000])

      # The same sidecar still serves other stores.
      assert {:ok, _} = Sidecar.call(Sidecar, "ping", %{})
      {:ok, mem} = ZarrBridge.create(storage: :memory, path: run, shape: {2}, dtype: :int8)
      assert :ok = Array.set_slice(mem, {5, 6})
      assert {:ok, {5, 6}} = Array.get_slice(mem)
    end
  end

  # -- GCS, Azure, HTTP: a round trip each --------------------------------------

  describe "gcs and azure" do
    for kind <- ["gcs", "azure"] do
      test "#{kind}: Elixir writes, zarr-python reads; zarr-python writes, Elixir reads",
           %{servers: servers, run: run} do
        ep = servers[unquote(kind)]
        opts = store_opts(ep, prefix: run)

        {:ok, group} = Group.create(opts ++ [attributes: %{"title" => unquote(kind)}])

        {:ok, array} =
          Group.create_array(group, "a", shape: {30, 7}, chunks: {8, 7}, dtype: :int16)

        data = NDArray.from_list!(for(i <- 0..209, do: i - 100), {30, 7}, :int16)
        assert :ok = Array.write(array, data)

        out =
          python!(
            ep,
            """
            store = remote_store(f'{BUCKET}/{RUN}')
            g = zarr.open_group(store, mode='r')
            print(json.dumps(dict(g.attrs)))
            print(sha(dump(g['a'][:])))
            w = zarr.create_array(store, name='py', shape=(11,), chunks=(4,), dtype='<f8', zarr_format=3)
            w[:] = np.linspace(0, 1, 11)
            print(sha(dump(w[:])))
            """,
            run
          )

        [attrs, theirs, py_digest] = String.split(out, "\n", trim: true)
        assert JSON.decode!(attrs) == %{"title" => unquote(kind)}
        assert theirs == sha(Python.dump(data))

        {:ok, py} = Group.open_array(group, "py")
        {:ok, nd} = Array.read(py)
        assert sha(Python.dump(nd)) == py_digest
      end
    end

    test "azure_blob is azure", %{servers: servers, run: run} do
      opts = store_opts(servers["azure"], prefix: run) |> Keyword.put(:storage, :azure_blob)
      {:ok, array} = ZarrBridge.create(opts ++ [shape: {3}, dtype: :uint8])
      assert :ok = Array.set_slice(array, {1, 2, 3})
      assert {:ok, {1, 2, 3}} = Array.get_slice(array)
    end
  end

  describe "http" do
    test "zarr-python writes the files, Elixir reads them over HTTP; writes are refused",
         %{servers: servers, run: run} do
      ep = servers["http"]

      digest =
        python!(
          ep,
          """
          root = os.path.join(ENDPOINT['options']['root'], RUN)
          g = zarr.open_group(root, mode='w', zarr_format=3, attributes={'src': 'http'})
          a = g.create_array('a', shape=(50, 20), chunks=(16, 16), shards=(32, 32), dtype='<u2')
          a[:] = (np.arange(1000, dtype='<u2').reshape(50, 20) * 3) % 65535
          zarr.consolidate_metadata(root)
          print(sha(dump(a[:])))
          """,
          run
        )

      url = "#{ep["url"]}/#{run}"
      {:ok, group} = Group.open(storage: :http, url: url)
      assert group.attributes == %{"src" => "http"}
      {:ok, array} = Group.open_array(group, "a")
      {:ok, nd} = Array.read(array)
      assert sha(Python.dump(nd)) == String.trim(digest)

      {:ok, same} = ZarrBridge.open(storage: :url, url: url <> "/a")
      assert {:ok, ^nd} = Array.read(same)

      assert {:error, %Error{code: :read_only}} = Array.set_slice(array, {{1}}, start: {0, 0})
      assert {:error, %Error{code: :read_only}} = Group.create_group(group, "new")
      assert {:error, %Error{code: :read_only}} = Group.create(storage: :http, url: url <> "/g")
    end
  end

  # ------------------------------------------------------------------------------

  # The Elixir store options for a server's endpoint.
  defp store_opts(%{"kind" => "s3", "url" => url, "options" => o}, extra) do
    [
      storage: :s3,
      bucket: @bucket,
      endpoint_url: url,
      region: o["region"],
      access_key_id: o["access_key_id"],
      secret_access_key: o["secret_access_key"]
    ]
    |> Keyword.merge(extra)
  end

  defp store_opts(%{"kind" => "gcs", "url" => url, "options" => o}, extra) do
    [storage: :gcs, bucket: @bucket, endpoint_url: url, project: o["project"], anonymous: true]
    |> Keyword.merge(extra)
  end

  defp store_opts(%{"kind" => "azure", "url" => url, "options" => o}, extra) do
    [
      storage: :azure,
      bucket: @bucket,
      endpoint_url: url,
      account_name: o["account_name"],
      account_key: o["account_key"]
    ]
    |> Keyword.merge(extra)
  end

  # zarr-python with its own store for the endpoint (s3fs, gcsfs, adlfs):
  # `remote_store(path)` in the script; BUCKET, RUN and ENDPOINT are set.
  defp python!(endpoint, script, run) do
    Python.run!(
      Python.prelude() <>
        """
        ENDPOINT = json.loads(sys.argv[1])
        BUCKET = #{Python.literal(@bucket)}
        RUN = sys.argv[2]
        o = ENDPOINT['options']

        def remote_store(path):
            from zarr.storage import FsspecStore
            kind = ENDPOINT['kind']
            if kind == 's3':
                import s3fs
                fs = s3fs.S3FileSystem(asynchronous=True, key=o['access_key_id'],
                                       secret=o['secret_access_key'], endpoint_url=ENDPOINT['url'],
                                       client_kwargs={'region_name': o['region']})
            elif kind == 'gcs':
                from gcsfs.core import GCSFileSystem
                fs = GCSFileSystem(asynchronous=True, endpoint_url=ENDPOINT['url'], token='anon',
                                   project=o['project'])
            else:
                import adlfs
                fs = adlfs.AzureBlobFileSystem(asynchronous=True,
                                               connection_string=o['connection_string'])
            return FsspecStore(fs, path=path)
        """ <> script,
      [encode_endpoint(endpoint), run]
    )
  end

  defp encode_endpoint(endpoint) do
    # The endpoint came as JSON; send it back the same way.
    endpoint["__json__"]
  end

  defp sha(bytes), do: :crypto.hash(:sha256, bytes) |> Base.encode16(case: :lower)

  # Starts `python -m tests.servers KIND`; it runs until its stdin (the
  # Port) closes, i.e. until the process that started it exits.
  defp start_server!(kind) do
    {endpoint, _port} = start_server_port!(kind)
    endpoint
  end

  defp start_server_port!(kind) do
    port =
      Port.open({:spawn_executable, Python.python()}, [
        :binary,
        :exit_status,
        {:line, 1_000_000},
        {:cd, @repo},
        {:args, ["-m", "tests.servers", kind]}
      ])

    receive do
      {^port, {:data, {:eol, line}}} ->
        line |> JSON.decode!() |> Map.put("__json__", line) |> then(&{&1, port})

      {^port, {:exit_status, status}} ->
        flunk("the #{kind} test server could not start (exit status #{status}); see stderr above")
    after
      120_000 -> flunk("the #{kind} test server did not start within 120 s")
    end
  end

  defp stop_server!(port) do
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    Port.close(port)
    SidecarCase.eventually(fn -> not SidecarCase.os_alive?(os_pid) end, 20_000)
  end

  defp make_bucket!(endpoint, name) do
    Python.run!(
      """
      import json, sys
      ep = json.loads(sys.argv[1]); name = sys.argv[2]; o = ep['options']
      if ep['kind'] == 's3':
          import boto3
          boto3.client('s3', endpoint_url=ep['url'], aws_access_key_id=o['access_key_id'],
                       aws_secret_access_key=o['secret_access_key'],
                       region_name=o['region']).create_bucket(Bucket=name)
      elif ep['kind'] == 'gcs':
          from gcsfs.core import GCSFileSystem
          GCSFileSystem(endpoint_url=ep['url'], token='anon', project=o['project']).mkdir(name)
      else:
          from azure.storage.blob import BlobServiceClient
          with BlobServiceClient.from_connection_string(o['connection_string']) as c:
              c.create_container(name)
      """,
      [encode_endpoint(endpoint), name]
    )
  end
end
