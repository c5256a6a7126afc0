defmodule ZarrBridge.Store do
  @moduledoc """
  Where a node lives: the store options of every function that names a node
  (`ZarrBridge.create/1`, `ZarrBridge.open/1`, `ZarrBridge.Group`, …), turned
  into the wire store map of `protocol/PROTOCOL.md` §8.

  ## Local stores

    * `storage: :filesystem` (the default), `path:` a directory;
    * `storage: :zip`, `path:` a zip file;
    * `storage: :memory`, `path:` the memory store's name.

  ## Object stores

    * `storage: :s3` - `bucket:` (required), `prefix:`, `region:`,
      `endpoint_url:`, `access_key_id:`, `secret_access_key:`,
      `session_token:`;
    * `storage: :gcs` - `bucket:` (required), `prefix:`, `endpoint_url:`,
      `project:`, `token:` (a credentials file, or `"anon"`),
      `service_account_key:` (the key's JSON text);
    * `storage: :azure` (or ExZarr's `:azure_blob`) - `bucket:` or
      `container:` (required), `prefix:`, `endpoint_url:`, `account_name:`,
      `account_key:`, `sas_token:`, `connection_string:`;
    * `storage: :http` - `url:` (`http://` or `https://`), **read only**:
      `create`, group creation and every write fail with `:read_only`
      before anything is sent;
    * `storage: :url` - `url:` (`s3://bucket/prefix`, `gs://…`, `az://…`,
      `https://…`, `file:///abs/dir`), with the options of the store the
      scheme names.

  Every object store also takes `anonymous:` (unsigned requests, no
  credentials looked up), `engine:` (`:obstore` or `:fsspec`, to override
  the sidecar's choice per kind), `retry:` (`max_retries:`, `timeout_s:`,
  `initial_backoff_s:`, for retries of idempotent reads) and
  `storage_options:` (a map passed through to the engine's constructor).

  Credentials left out are looked up **by the sidecar** in its own
  environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
  `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`,
  `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`; `GOOGLE_APPLICATION_CREDENTIALS`,
  `GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_CLOUD_PROJECT`,
  `STORAGE_EMULATOR_HOST`; `AZURE_STORAGE_ACCOUNT_NAME`,
  `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`,
  `AZURE_STORAGE_CONNECTION_STRING`, `AZURE_STORAGE_ENDPOINT`): set them
  for the sidecar with `ZarrBridge.Sidecar`'s `env:` option or in the
  environment of the BEAM, which the sidecar inherits. This client reads
  none of them.

  The `path` field of an array or group on an object store holds its
  location (`s3://bucket/prefix`, the `url:`), never a credential; the
  `store` field holds the wire map with the credentials, and `inspect`
  shows it with every credential replaced by `"***"`.

  Unknown options, options of another store kind, and options of the wrong
  type raise `ArgumentError` (the message never shows a credential's
  value).
  """

  alias ZarrBridge.Error
  alias ZarrBridge.Options.Schema

  @local [:filesystem, :zip, :memory]
  @remote [:s3, :gcs, :azure, :azure_blob, :http, :url]
  @storages @local ++ @remote

  @type storage ::
          :filesystem | :zip | :memory | :s3 | :gcs | :azure | :azure_blob | :http | :url

  @retry_options [
    max_retries: {:non_neg_integer, nil, "retries of one idempotent request."},
    timeout_s: {:pos_number, nil, "the time all attempts of one request may take, in seconds."},
    initial_backoff_s: {:pos_number, nil, "the first backoff, in seconds (it doubles)."}
  ]

  # Every remote option, spelled once: name, type, default, doc.
  @remote_options [
    bucket: {:string, nil, "the bucket (S3, GCS) or container (Azure)."},
    container: {:string, nil, "Azure: the container (the same as `bucket:`)."},
    prefix: {:string, nil, "the key prefix inside the bucket (default: the bucket's root)."},
    url: {:string, nil, "`:http` and `:url`: the store's URL."},
    region: {:string, nil, "S3: the region."},
    endpoint_url: {:string, nil, "the service endpoint (a private endpoint or an emulator)."},
    access_key_id: {{:secret, :string}, nil, "S3 credentials."},
    secret_access_key: {{:secret, :string}, nil, "S3 credentials."},
    session_token: {{:secret, :string}, nil, "S3 credentials."},
    token: {{:secret, :string}, nil, "GCS: a credentials file, or `\"anon\"`."},
    project: {:string, nil, "GCS: the project."},
    service_account_key: {{:secret, :string}, nil, "GCS: a service account key (JSON)."},
    account_name: {:string, nil, "Azure: the storage account."},
    account_key: {{:secret, :string}, nil, "Azure: the account key."},
    sas_token: {{:secret, :string}, nil, "Azure: a SAS token."},
    connection_string: {{:secret, :string}, nil, "Azure: a connection string."},
    anonymous: {:boolean, nil, "unsigned requests; no credentials are looked up."},
    engine: {{:in, [:obstore, :fsspec]}, nil, "the store library (default: per kind)."},
    retry: {{:options, @retry_options}, nil, "retries of idempotent reads."},
    storage_options: {{:secret, :map}, nil, "passed through to the engine's constructor."}
  ]

  @common [:prefix, :endpoint_url, :anonymous, :engine, :retry, :storage_options]
  @s3 [:bucket, :region, :access_key_id, :secret_access_key, :session_token]
  @gcs [:bucket, :token, :project, :service_account_key]
  @azure [:bucket, :container, :account_name, :account_key, :sas_token, :connection_string]

  # The options each kind takes (a :url store: those of its scheme's kind).
  @kind_options %{
    s3: @s3 ++ @common,
    gcs: @gcs ++ @common,
    azure: @azure ++ @common,
    http: [:url, :engine, :retry, :storage_options],
    file: [:url]
  }

  @schemes %{
    "s3" => :s3,
    "s3a" => :s3,
    "gs" => :gcs,
    "gcs" => :gcs,
    "az" => :azure,
    "abfs" => :azure,
    "azure" => :azure,
    "http" => :http,
    "https" => :http,
    "file" => :file
  }

  # Keys whose values are secrets, in the store map and in storage_options
  # (the sidecar's pybridge/stores/redact.py SECRET_KEYS).
  @secret_keys ~w(access_key_id secret_access_key session_token token key secret password
                  account_key sas_token sas_key connection_string service_account_key
                  credentials client_secret bearer_token aws_access_key_id
                  aws_secret_access_key aws_session_token azure_storage_account_key
                  azure_storage_sas_token google_service_account_key)

  @mask "***"

  @doc "The storages there are."
  @spec storages() :: [storage]
  def storages, do: @storages

  @doc "The object-store storages."
  @spec remote_storages() :: [storage]
  def remote_storages, do: @remote

  @doc "Every store option a function that names a node accepts (besides `:node`)."
  @spec keys() :: [atom]
  def keys, do: [:storage, :path | Keyword.keys(@remote_options)]

  @doc "The docs list of the object-store options."
  @spec docs() :: String.t()
  def docs, do: Schema.docs(@remote_options)

  @doc """
  `{storage, path, store}` from the store options in `opts`: the storage,
  the path shown in the struct (a local path, or the object store's
  location) and the wire store map. Raises `ArgumentError` for bad options.
  """
  @spec build!(keyword) :: {storage, String.t(), map}
  def build!(opts) do
    storage = Keyword.get(opts, :storage, :filesystem)

    cond do
      storage in @local ->
        refuse_remote_options!(opts, storage)
        local!(storage, opts)

      storage in @remote ->
        if Keyword.has_key?(opts, :path),
          do:
            raise(
              ArgumentError,
              "path: is for the :filesystem, :zip and :memory storages; " <>
                "a #{inspect(storage)} store takes bucket:/prefix: or url:"
            )

        remote!(storage, Keyword.take(opts, Keyword.keys(@remote_options)))

      true ->
        raise ArgumentError,
              "storage must be one of #{inspect(@storages)}, got: #{inspect(storage)}"
    end
  end

  @doc """
  `:ok`, or a `:read_only` error when `store` cannot be written (an `:http`
  store, or one marked read only) and `mode` (the wire mode of a request)
  writes.
  """
  @spec check_writable(map, String.t() | atom | nil) :: :ok | {:error, Error.t()}
  def check_writable(store, mode) do
    if read_only?(store) and to_string(mode || "r") != "r" do
      {:error,
       %Error{
         code: :read_only,
         message: "#{location(store)} is a read-only store (#{store["kind"]}); nothing was sent",
         details: %{url: location(store)}
       }}
    else
      :ok
    end
  end

  @doc """
  The store options that build `store` again (`build!/1` of them gives the
  same map): how a group passes its store on to its members.
  """
  @spec options(storage, String.t(), map) :: keyword
  def options(storage, path, _store) when storage in @local, do: [storage: storage, path: path]

  def options(storage, _path, store) when storage in @remote do
    names = Map.new(@remote_options, fn {key, _} -> {Atom.to_string(key), key} end)

    [storage: storage] ++
      for {name, value} <- Enum.sort(store), key = names[name], key != nil do
        {key, option_value(key, value)}
      end
  end

  defp option_value(:engine, engine), do: String.to_existing_atom(engine)

  defp option_value(:retry, retry) do
    retry_names = Map.new(@retry_options, fn {key, _} -> {Atom.to_string(key), key} end)
    for {name, value} <- retry, do: {Map.fetch!(retry_names, name), value}
  end

  defp option_value(_key, value), do: value

  @doc "Whether the store map names a read-only store (`:http`, or `read_only`)."
  @spec read_only?(map) :: boolean
  def read_only?(%{"kind" => "http"}), do: true
  def read_only?(%{"kind" => "url", "url" => "http" <> _}), do: true
  def read_only?(%{"read_only" => true}), do: true
  def read_only?(%{}), do: false

  @doc "The store map with every credential (also inside `storage_options`) replaced by `\"***\"`."
  @spec redact(term) :: term
  def redact(%{} = map) when not is_struct(map) do
    Map.new(map, fn {key, value} ->
      cond do
        secret_key?(key) and value != nil -> {key, @mask}
        is_map(value) -> {key, redact(value)}
        true -> {key, value}
      end
    end)
  end

  def redact(other), do: other

  # ------------------------------------------------------------------

  defp local!(storage, opts) do
    path =
      case Keyword.fetch(opts, :path) do
        {:ok, path} ->
          case Schema.text(path) do
            path when is_binary(path) and path != "" ->
              path

            other ->
              raise ArgumentError, "path must be a non-empty string, got: #{inspect(other)}"
          end

        :error ->
          raise ArgumentError, "the :path option is required"
      end

    case storage do
      :memory ->
        {storage, path, %{"kind" => "memory", "name" => path}}

      kind ->
        path = Path.expand(path)
        {storage, path, %{"kind" => Atom.to_string(kind), "path" => path}}
    end
  end

  defp refuse_remote_options!(opts, storage) do
    case opts |> Keyword.keys() |> Enum.filter(&Keyword.has_key?(@remote_options, &1)) do
      [] ->
        :ok

      extra ->
        raise ArgumentError,
              "option(s) #{inspect(Enum.uniq(extra))} are for object stores, " <>
                "not for a #{inspect(storage)} store"
    end
  end

  defp remote!(storage, opts) do
    given = Schema.validate!(opts, @remote_options, "a #{inspect(storage)} store")
    given = for {key, value} <- given, value != nil, into: %{}, do: {key, value}
    {kind, location} = kind_and_location!(storage, given)
    allowed = allowed_options(storage, kind)

    case Map.keys(given) -- allowed do
      [] ->
        :ok

      extra ->
        raise ArgumentError,
              "option(s) #{inspect(Enum.sort(extra))} do not apply to a " <>
                "#{kind_name(storage, kind)} store; it takes: #{inspect(allowed)}"
    end

    store =
      given
      |> Map.new(fn {key, value} -> {Atom.to_string(key), wire_value(key, value)} end)
      |> Map.put("kind", wire_kind(storage))

    {storage, location, store}
  end

  # A :url store takes the options of its scheme's kind, with the url in
  # place of bucket:/prefix:.
  defp allowed_options(:url, kind),
    do: [:url | Map.fetch!(@kind_options, kind) -- [:bucket, :container, :prefix]]

  defp allowed_options(_storage, kind), do: Map.fetch!(@kind_options, kind)

  defp kind_and_location!(storage, given) when storage in [:s3, :gcs, :azure, :azure_blob] do
    kind = if storage == :azure_blob, do: :azure, else: storage

    if Map.has_key?(given, :url),
      do: raise(ArgumentError, "url: is for the :http and :url storages; use bucket: and prefix:")

    bucket =
      case {given[:bucket], given[:container]} do
        {nil, nil} -> raise ArgumentError, "a #{inspect(storage)} store needs bucket:"
        {bucket, nil} -> bucket
        {nil, container} -> container
        {_, _} -> raise ArgumentError, "give bucket: or container:, not both"
      end

    if bucket == "" or String.contains?(bucket, "/"),
      do: raise(ArgumentError, "bucket must be a bucket name, got: #{inspect(bucket)}")

    scheme = %{s3: "s3", gcs: "gs", azure: "az"}[kind]
    prefix = (given[:prefix] || "") |> String.trim("/")
    {kind, String.trim_trailing("#{scheme}://#{bucket}/#{prefix}", "/")}
  end

  defp kind_and_location!(storage, given) when storage in [:http, :url] do
    url = given[:url] || raise ArgumentError, "a #{inspect(storage)} store needs url:"
    uri = URI.parse(url)
    kind = Map.get(@schemes, String.downcase(uri.scheme || ""))

    cond do
      kind == nil ->
        raise ArgumentError,
              "url: scheme must be one of #{inspect(Map.keys(@schemes))}, got: " <>
                inspect(uri.scheme)

      storage == :http and kind != :http ->
        raise ArgumentError, "an :http store needs an http:// or https:// url"

      uri.userinfo != nil or (kind == :http and String.contains?(url, "@")) ->
        raise ArgumentError, "url: takes no credentials (no user@); give them as options"

      uri.query != nil or uri.fragment != nil ->
        raise ArgumentError, "url: takes no query or fragment; use storage_options:"

      kind in [:http, :s3, :gcs, :azure] and (uri.host || "") == "" ->
        raise ArgumentError, "url: needs a host or bucket (#{uri.scheme}://HOST/…)"

      kind == :file and (uri.path || "") == "" ->
        raise ArgumentError, "a file:// url needs a path"

      true ->
        {kind, String.trim_trailing(url, "/")}
    end
  end

  defp wire_kind(:azure_blob), do: "azure"
  defp wire_kind(storage), do: Atom.to_string(storage)

  defp kind_name(:url, kind), do: "#{kind}:// url"
  defp kind_name(storage, _kind), do: inspect(storage)

  defp wire_value(:engine, engine), do: Atom.to_string(engine)
  defp wire_value(:prefix, prefix), do: String.trim(prefix, "/")

  defp wire_value(:retry, retry),
    do: for({k, v} <- retry, v != nil, into: %{}, do: {Atom.to_string(k), v})

  defp wire_value(:storage_options, options), do: options |> plain!([]) |> stringify()
  defp wire_value(_key, value), do: value

  # storage_options hold JSON-like values only, so that nothing in them can
  # fail to encode later with a message that shows the value (a secret).
  defp plain!(%{} = map, at) when not is_struct(map) do
    Enum.each(map, fn {key, value} ->
      unless is_atom(key) or is_binary(key),
        do: raise(ArgumentError, "storage_options keys must be strings or atoms")

      plain!(value, [key | at])
    end)

    map
  end

  defp plain!(list, at) when is_list(list), do: Enum.each(list, &plain!(&1, at)) && list

  defp plain!(value, _at)
       when is_binary(value) or is_number(value) or is_boolean(value) or is_nil(value),
       do: value

  defp plain!(_value, at) do
    raise ArgumentError,
          "storage_options values must be strings, numbers, booleans, nil, lists or maps " <>
            "(the value at #{at |> Enum.reverse() |> Enum.map_join(".", &to_string/1)} is not)"
  end

  # Keys as strings (atoms and charlists too), at every depth.
  defp stringify(%{} = map) when not is_struct(map),
    do: Map.new(map, fn {k, v} -> {key_text(k), stringify(v)} end)

  defp stringify(other), do: other

  defp key_text(key) when is_atom(key), do: Atom.to_string(key)
  defp key_text(key), do: Schema.text(key)

  defp secret_key?(key) when is_atom(key), do: secret_key?(Atom.to_string(key))
  defp secret_key?(key) when is_binary(key), do: String.downcase(key) in @secret_keys
  defp secret_key?(_key), do: false

  defp location(%{"url" => url}), do: url

  defp location(%{"bucket" => bucket} = store),
    do: "#{store["kind"]}://#{bucket}/#{store["prefix"] || ""}" |> String.trim_trailing("/")

  defp location(%{"container" => bucket} = store),
    do: location(Map.put(store, "bucket", bucket))

  defp location(store), do: store["path"] || store["name"] || "the store"
end
