// The harness's libnvinfer.so.<major>: TensorRT's global plugin registry (getPluginRegistry) with the contracts of
// NvInferRuntimeCommon.h (registerCreator refuses a creator of a name/version/namespace already registered;
// loadLibrary dlopens, passes the logger finder, registers getCreators' list and fails when any is registered
// already; deregisterLibrary deregisters and closes), and TensorRT's global logger (getLogger). Built with the
// soname libnvinfer.so.<major>, so the plugin finds it as it finds TensorRT's.
#include "fake_nvinfer.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

std::mutex gMutex;
ILoggerFinder* gFinder{nullptr};
ILogger* gGlobalLogger{nullptr};

struct Entry
{
    IPluginCreatorInterface* creator;
    std::string name;
    std::string version;
    std::string ns;
};

IPluginCreatorV3One* asV3One(IPluginCreatorInterface* creator)
{
    InterfaceInfo const info = creator->getInterfaceInfo();
    if (info.kind == nullptr || std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
    {
        return nullptr;
    }
    return static_cast<IPluginCreatorV3One*>(creator);
}

void logError(std::string const& message)
{
    ILogger* logger = gFinder != nullptr ? gFinder->findLogger() : gGlobalLogger;
    if (logger != nullptr)
    {
        logger->log(ILogger::Severity::kERROR, message.c_str());
    }
}

class Registry : public IPluginRegistry
{
public:
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const /*pluginNamespace*/) noexcept override
    {
        IPluginCreatorV3One* v3 = asV3One(&creator);
        if (v3 == nullptr)
        {
            return false;
        }
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        Entry entry{&creator, v3->getPluginName(), v3->getPluginVersion(), v3->getPluginNamespace()};
        for (Entry const& e : mEntries)
        {
            if (e.name == entry.name && e.version == entry.version && e.ns == entry.ns)
            {
                logError("Plugin creator already registered - " + e.ns + "::" + e.name + " version " + e.version);
                return false;
            }
        }
        mEntries.push_back(entry);
        return true;
    }

    IPluginCreatorInterface* const* getAllCreators(int32_t* const numCreators) const noexcept override
    {
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        mAll.clear();
        for (Entry const& e : mEntries)
        {
            mAll.push_back(e.creator);
        }
        *numCreators = static_cast<int32_t>(mAll.size());
        return mAll.empty() ? nullptr : mAll.data();
    }

    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const numCreators) noexcept
    {
        return getAllCreators(numCreators);
    }

    IPluginCreatorInterface* getCreator(AsciiChar const* const pluginName, AsciiChar const* const pluginVersion,
        AsciiChar const* const pluginNamespace = "") noexcept override
    {
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        for (Entry const& e : mEntries)
        {
            if (e.name == pluginName && e.version == pluginVersion && e.ns == pluginNamespace)
            {
                return e.creator;
            }
        }
        return nullptr;
    }

    bool deregisterCreator(IPluginCreatorInterface const& creator) noexcept override
    {
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        for (auto it = mEntries.begin(); it != mEntries.end(); ++it)
        {
            if (it->creator == &creator)
            {
                mEntries.erase(it);
                return true;
            }
        }
        return false;
    }

    PluginLibraryHandle loadLibrary(AsciiChar const* pluginPath) noexcept override
    {
        // not under the registry's lock: a library may register itself while it is being loaded
        void* handle = dlopen(pluginPath, RTLD_LAZY | RTLD_LOCAL);
        if (handle == nullptr)
        {
            logError(std::string("Could not load plugin library: ") + dlerror());
            return nullptr;
        }
        using SetLoggerFinder = void (*)(ILoggerFinder*);
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(handle, "setLoggerFinder"));
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
        if (setLoggerFinder == nullptr || getCreators == nullptr)
        {
            logError("the plugin library exports no setLoggerFinder or getCreators");
            dlclose(handle);
            return nullptr;
        }
        setLoggerFinder(gFinder);
        int32_t n = 0;
        IPluginCreatorInterface* const* creators = getCreators(n);
        std::vector<IPluginCreatorInterface*> registered;
        for (int32_t i = 0; i < n; ++i)
        {
            if (!registerCreator(*creators[i], ""))
            {
                for (IPluginCreatorInterface* c : registered)
                {
                    deregisterCreator(*c);
                }
                dlclose(handle);
                return nullptr; // "fail and return nullptr if any of the plugins are already registered"
            }
            registered.push_back(creators[i]);
        }
        std::lock_guard<std::recursive_mutex> lock(mMutex);
        mLibraries[handle] = registered;
        return handle;
    }

    void deregisterLibrary(PluginLibraryHandle handle) noexcept override
    {
        std::vector<IPluginCreatorInterface*> creators;
        {
            std::lock_guard<std::recursive_mutex> lock(mMutex);
            auto found = mLibraries.find(handle);
            if (found == mLibraries.end())
            {
                return;
            }
            creators = found->second;
            mLibraries.erase(found);
        }
        for (IPluginCreatorInterface* c : creators)
        {
            deregisterCreator(*c);
        }
        dlclose(handle);
    }

    void setErrorRecorder(IErrorRecorder* const /*recorder*/) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const /*enabled*/) override {}
    IPluginResource* acquirePluginResource(AsciiChar const* /*key*/, IPluginResource* /*resource*/) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(AsciiChar const* /*key*/) noexcept override
    {
        return -1;
    }
#if NV_TENSORRT_MAJOR < 11
    // the IPluginV2 creators' registry, gone in TensorRT 11; RefinerDLA is an IPluginV3 plugin
    bool registerCreator(IPluginCreator& /*creator*/, AsciiChar const* const /*ns*/) noexcept override
    {
        return false;
    }
    IPluginCreator* const* getPluginCreatorList(int32_t* const numCreators) const noexcept override
    {
        *numCreators = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const /*name*/, AsciiChar const* const /*version*/,
        AsciiChar const* const /*ns*/ = "") noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const& /*creator*/) noexcept override
    {
        return false;
    }
#endif

private:
    mutable std::recursive_mutex mMutex;
    std::vector<Entry> mEntries;
    mutable std::vector<IPluginCreatorInterface*> mAll;
    std::map<void*, std::vector<IPluginCreatorInterface*>> mLibraries;
};

} // namespace

extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept
{
    static Registry* registry = new Registry; // outlives every library's static destructors, as TensorRT's does
    return registry;
}

extern "C" __attribute__((visibility("default"))) ILogger* getLogger() noexcept
{
    std::lock_guard<std::mutex> lock(gMutex);
    return gGlobalLogger;
}

extern "C" __attribute__((visibility("default"))) void fakeNvinferSetLoggers(ILoggerFinder* finder, ILogger* global)
{
    std::lock_guard<std::mutex> lock(gMutex);
    gFinder = finder;
    gGlobalLogger = global;
}
