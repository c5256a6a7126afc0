defmodule ZarrBridge.StoreErrorsTest do
  # A full disk for real (a small tmpfs filled to the last byte, as root):
  # the client gets :store_error naming the operation, the reason and the
  # full path, a failed create leaves no directory, and the sidecar goes on.
  use ExUnit.Case, async: false

  alias ZarrBridge.{Array, Error, Group}

  @moduletag timeout: 120_000

  if System.cmd("id", ["-u"]) != {"0\n", 0},
    do: @moduletag(skip: "mounting a tmpfs needs root")

  setup do
    dir = Path.join(System.tmp_dir!(), "zb-store-errors-#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)

    {output, status} =
      System.cmd("mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", dir], stderr_to_stdout: true)

    if status != 0, do: raise("cannot mount a tmpfs on #{dir}: #{output}")

    on_exit(fn ->
      System.cmd("umount", [dir], stderr_to_stdout: true)
      File.rm_rf!(dir)
    end)

    %{dir: dir}
  end

  # Takes every free byte of the tmpfs.
  defp fill(dir) do
    {:ok, file} = :file.open(Path.join(dir, "filler"), [:append, :raw, :binary])

    for size <- [65_536, 4096, 1] do
      block = :binary.copy(<<0>>, size)
      Stream.repeatedly(fn -> :file.write(file, block) end) |> Enum.find(&(&1 != :ok))
    end

    :file.close(file)
  end

  test "update_attributes on a full disk is :store_error, and nothing is lost", %{dir: dir} do
    {:ok, array} =
      ZarrBridge.create(path: dir, node: "a", shape: {8}, dtype: :int32, attributes: %{"x" => 1})

    {:ok, group} = Group.create(path: dir, node: "g", attributes: %{"x" => 1})
    fill(dir)
    big = %{"y" => String.duplicate("z", 20_000)}

    assert {:error, %Error{code: :store_error, message: message, details: details}} =
             Array.update_attributes(array, big)

    assert message =~ "cannot update the attributes of the array at path 'a'"
    assert message =~ "no space left on device"
    assert message =~ "'#{Path.join(dir, "a")}'"
    assert details["errno"] == "ENOSPC"

    assert {:error, %Error{code: :store_error, message: message}} =
             Group.put_attributes(group, big)

    assert message =~ "no space left on device"

    error = assert_raise Error, fn -> Array.update_attributes!(array, big) end
    assert error.code == :store_error

    File.rm!(Path.join(dir, "filler"))
    assert Array.get_attributes(array) == {:ok, %{"x" => 1}}
    assert :ok = Array.update_attributes(array, %{"y" => 2})
  end

  test "a create that fails on a full disk leaves no directory behind", %{dir: dir} do
    File.mkdir_p!(Path.join(dir, "kept"))
    fill(dir)
    big = %{"y" => String.duplicate("z", 20_000)}

    assert {:error, %Error{code: :store_error, message: message, details: details}} =
             ZarrBridge.create(
               path: dir,
               node: "kept/new/array",
               shape: {8},
               dtype: :int32,
               attributes: big
             )

    assert message =~ "cannot create the array at path 'kept/new/array'"
    assert message =~ "no space left on device"
    assert details["path"] == Path.join(dir, "kept/new/array")

    assert {:error, %Error{code: :store_error}} =
             Group.create(path: dir, node: "newgroup", attributes: big)

    assert Enum.sort(File.ls!(dir)) == ["filler", "kept"]
    assert File.ls!(Path.join(dir, "kept")) == []

    # the sidecar still serves
    File.rm!(Path.join(dir, "filler"))

    assert {:ok, array} =
             ZarrBridge.create(path: dir, node: "kept/new/array", shape: {2}, dtype: :int8)

    assert :ok = Array.set_slice(array, {1, 2})
    assert Array.get_slice(array) == {:ok, {1, 2}}
  end
end
